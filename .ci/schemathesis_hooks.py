"""schemathesis hooks for .ci/schemathesis.

Every generated PATCH gets an Idempotency-Key of its own: schemathesis draws keys from the header's
pattern and soon sends one key ("0") with two bodies, which patchbay rightly answers 422 (the same key
with another request) and schemathesis, which cannot know that the key was used, calls a valid request
rejected. Replays and reuse are tested in tests/callers.rs.
"""

import uuid

import schemathesis


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    if case.headers and "Idempotency-Key" in case.headers:
        case.headers["Idempotency-Key"] = uuid.uuid4().hex
