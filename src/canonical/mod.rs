//! The canonical customer: its fields, the parsed merge patch, validation and problems. Pure code, no IO.
//!
//! Every provider dialect translates between this model and its own wire format, so the names here are the
//! ones callers see: snake_case, with dotted paths (`billing_address.city`) in error messages.

mod json;
mod linked;
mod merge;
mod order;
mod patch;
mod problem;
mod slots;

pub use json::parse_object;
pub use linked::{merge_linked, Conflict, Holder};
pub use merge::merge;
pub use order::{Customer, Member};
pub use patch::{AddressChange, AddressSupport, Capabilities, Change, CustomerPatch};
pub use problem::{FieldError, Problem, ProblemKind};
pub use slots::{Slot, Slots};

use std::fmt;

/// A top-level canonical string field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Field {
    FirstName,
    LastName,
    CompanyName,
    Email,
    Phone,
    Website,
    Status,
}

impl Field {
    pub const ALL: [Field; 7] = [
        Field::FirstName,
        Field::LastName,
        Field::CompanyName,
        Field::Email,
        Field::Phone,
        Field::Website,
        Field::Status,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Field::FirstName => "first_name",
            Field::LastName => "last_name",
            Field::CompanyName => "company_name",
            Field::Email => "email",
            Field::Phone => "phone",
            Field::Website => "website",
            Field::Status => "status",
        }
    }

    pub fn from_name(name: &str) -> Option<Field> {
        Field::ALL.into_iter().find(|f| f.name() == name)
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which of the two canonical addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AddressKind {
    Billing,
    Shipping,
}

impl AddressKind {
    pub const ALL: [AddressKind; 2] = [AddressKind::Billing, AddressKind::Shipping];

    pub fn name(self) -> &'static str {
        match self {
            AddressKind::Billing => "billing_address",
            AddressKind::Shipping => "shipping_address",
        }
    }

    pub fn from_name(name: &str) -> Option<AddressKind> {
        AddressKind::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// A sub-field of a canonical address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AddressPart {
    Line1,
    Line2,
    City,
    State,
    PostalCode,
    Country,
}

impl AddressPart {
    pub const ALL: [AddressPart; 6] = [
        AddressPart::Line1,
        AddressPart::Line2,
        AddressPart::City,
        AddressPart::State,
        AddressPart::PostalCode,
        AddressPart::Country,
    ];

    pub fn name(self) -> &'static str {
        match self {
            AddressPart::Line1 => "line1",
            AddressPart::Line2 => "line2",
            AddressPart::City => "city",
            AddressPart::State => "state",
            AddressPart::PostalCode => "postal_code",
            AddressPart::Country => "country",
        }
    }

    pub fn from_name(name: &str) -> Option<AddressPart> {
        AddressPart::ALL.into_iter().find(|p| p.name() == name)
    }
}

/// The dotted canonical path of an address sub-field, as used in errors and `Patchbay-Skipped`.
pub fn address_path(kind: AddressKind, part: AddressPart) -> String {
    format!("{}.{}", kind.name(), part.name())
}

impl Slot for Field {
    const ALL: &'static [Field] = &Field::ALL;

    fn slot(self) -> usize {
        self as usize
    }
}

impl Slot for AddressKind {
    const ALL: &'static [AddressKind] = &AddressKind::ALL;

    fn slot(self) -> usize {
        self as usize
    }
}

impl Slot for AddressPart {
    const ALL: &'static [AddressPart] = &AddressPart::ALL;

    fn slot(self) -> usize {
        self as usize
    }
}

/// Fields of a response that a patch may never write.
pub const READ_ONLY_FIELDS: [&str; 4] = ["id", "provider", "created_at", "updated_at"];
