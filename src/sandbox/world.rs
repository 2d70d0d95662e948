//! Everything the sandbox holds, behind one lock: the state the emulators share, and each emulator's
//! own books beside it. Requests are dispatched here to the emulator of their provider.

use http::StatusCode;

use super::exchange::{ProviderRequest, Reply};
use super::state::{Provider, State};
use super::{count, juice, sparklayer, sweetspot};

pub(crate) struct World {
    pub state: State,
    pub count_tokens: count::Tokens,
    pub sparklayer_tokens: sparklayer::Tokens,
    pub juice_replays: juice::Replays,
}

impl World {
    /// The demo customers, default limits, the demo tokens.
    pub fn new() -> World {
        let mut world = World {
            state: State::new(),
            count_tokens: count::Tokens::new(),
            sparklayer_tokens: sparklayer::Tokens::new(),
            juice_replays: juice::Replays::new(),
        };
        world.reset();
        world
    }

    /// Back to the demo seed with default limits and token settings and an empty log. Issued tokens
    /// stay valid: a running gateway holds them.
    pub fn reset(&mut self) {
        let now = self.state.write_timestamp();
        self.state.reset([
            sweetspot::seed(&now),
            count::seed(&now),
            juice::seed(&now),
            sparklayer::seed(&now),
        ]);
        self.juice_replays.clear();
    }

    /// Expires every access token issued so far; how many there were.
    pub fn expire_tokens(&mut self) -> usize {
        self.count_tokens.expire_all() + self.sparklayer_tokens.expire_all()
    }

    /// The provider's emulator answers the request.
    pub fn handle(&mut self, provider: Provider, request: &ProviderRequest) -> Reply {
        let state = &mut self.state;
        match provider {
            Provider::SweetSpot => sweetspot::handle(state, request),
            Provider::Count => count::handle(state, &mut self.count_tokens, request),
            Provider::Juice => juice::handle(state, &mut self.juice_replays, request),
            Provider::SparkLayer => sparklayer::handle(state, &mut self.sparklayer_tokens, request),
        }
    }
}

/// An error in the provider's own shape, for injected faults that name only a status.
pub(crate) fn error_reply(provider: Provider, status: StatusCode, message: &str) -> Reply {
    match provider {
        Provider::SweetSpot => sweetspot::error_reply(status, message),
        Provider::Count => count::error_reply(status, message),
        Provider::Juice => juice::error_reply(status, message),
        Provider::SparkLayer => sparklayer::error_reply(status, message),
    }
}
