"""Schemathesis hooks for `.ci/schemathesis` (loaded through SCHEMATHESIS_HOOKS).

The first three supply data the document describes but a generator cannot
invent; the fourth bounds the one response that never ends by itself; the
fifth drops one narrowly defined kind of failure that the
contract makes impossible to avoid; the sixth works around a CPython bug;
the seventh keeps back cases that multipart cannot tell from valid ones.
Every check stays on (docs/API-NOTES.md, "Fuzzing the document").

1. Image files. The upload's `files` parts are `image/png, image/jpeg,
   image/webp` (the document's `encoding`), decided from the bytes: random
   bytes are not an image. These strategies make real images, of a few
   sizes and colours, for schemathesis to send as those media types.
   Schemathesis puts such a file in the body as one value where the
   document has an array of parts; it becomes a list of one part, so that
   the body it judges is the body it sends.
2. Callback URLs. `callback_url` (upload) and `default_url` (PUT /webhook)
   must name a host whose addresses a delivery may reach, which the server
   checks by resolving it: no schema can say which names resolve, and the
   CI machine may have no DNS at all. A URL the document allows becomes one
   on the loopback network, which `.ci/schemathesis` opens to webhooks
   (`WEBHOOK_ALLOWED_NETS=127.0.0.0/8`); one it does not allow is kept.
3. Idempotency keys. A repeated `Idempotency-Key` answers with the job the
   key made first, without reading the body (docs/API-NOTES.md): a key is
   one logical upload's, and a generator that draws "0" twice for two
   different bodies is retrying neither. Each valid key is made unique to
   its case; an invalid one (a negative case's violation) is kept.

4. The caller's event stream. `GET /events` stays open until the client
   leaves; `timeout_seconds` (1 to 86400) closes it sooner. A case without
   it, or with a valid value, is given `timeout_seconds=1`, so that the
   stream ends and its answer can be judged (as a client behind a proxy
   that cuts long requests would ask); an invalid value is kept (400).

And two things that are not about data:

5. Cancelling is not deleting. `DELETE /jobs/{job_id}` on a job that has
   not ended cancels it: 200 with the job, which stays readable until a
   second DELETE removes it (204). That is the contract (API.md: "cancel a
   running job ... or delete a finished one"); the `use_after_free` check
   counts every 2xx DELETE as a removal. Exactly those failures, where the
   DELETE answered 200, are dropped; after a 204 the check stands.
6. A CPython 3.11 bug: `ast.parse` in two threads at once can fail with
   "AST constructor recursion depth mismatch". Hypothesis parses
   lambdas to describe strategies, and schemathesis runs two workers; the
   parses are serialised here.
7. Short lists and booleans. An upload option drawn as `[]` goes out as
   no part at all, the valid request without it; one drawn as `[x]` goes
   out as the single part `x`, the request with `x` itself (valid when `x`
   is, as for `face_limit: [785]`); and `texture` drawn as a boolean goes
   out as `true`/`false`, two of its values. Such cases are not sent: each
   is its twin on the wire, which is generated on its own.
"""

import ast
import re
import struct
import threading
import uuid
import zlib

import jsonschema_rs
import schemathesis
from hypothesis import strategies as st
from schemathesis.openapi.checks import UseAfterFree
from schemathesis.transport.serialization import Binary

_ast_parse = ast.parse
_ast_lock = threading.Lock()


def _serialised_ast_parse(*args, **kwargs):
    with _ast_lock:
        return _ast_parse(*args, **kwargs)


ast.parse = _serialised_ast_parse


def _png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A PNG of one colour, written without an imaging library."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    row = b"\x00" + bytes(rgb) * width
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(row * height))
        + chunk(b"IEND", b"")
    )


# The smallest well-formed JPEG (1x1 grey) and WebP (1x1, lossless).
_JPEG = bytes.fromhex(
    "ffd8ffe000104a46494600010100000100010000ffdb00430050373c463c32504641465a55505f78c882"
    "786e6e78f5afb991c8ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"
    "ffffffffffffc0000b080001000101011100ffc4001f0000010501010101010100000000000000000102"
    "030405060708090a0bffc400b5100002010303020403050504040000017d010203000411051221314106"
    "13516107227114328191a1082342b1c11552d1f02433627282090a161718191a25262728292a34353637"
    "38393a434445464748494a535455565758595a636465666768696a737475767778797a83848586878889"
    "8a92939495969798999aa2a3a4a5a6a7a8a9aab2b3b4b5b6b7b8b9bac2c3c4c5c6c7c8c9cad2d3d4d5d6"
    "d7d8d9dae1e2e3e4e5e6e7e8e9eaf1f2f3f4f5f6f7f8f9faffda0008010100003f00a55fffd9"
)
_WEBP = bytes.fromhex("524946461a000000574542505650384c0e0000002f00000000071011fd0f4444ff03")

_colours = st.tuples(*(st.integers(0, 255),) * 3)
_sizes = st.integers(1, 24)
schemathesis.openapi.media_type(
    "image/png", st.builds(_png, _sizes, _sizes, _colours)
)
schemathesis.openapi.media_type("image/jpeg", st.just(_JPEG))
schemathesis.openapi.media_type("image/webp", st.just(_WEBP))

# What a callback URL becomes: a loopback port nothing listens on (the job's
# delivery fails and is retried in the background, which is fine here).
_CALLBACK = "https://127.0.0.1:9/hook"
# The URL fields, and where the document describes each.
_URL_FIELDS = {
    "POST /upload": (
        "callback_url",
        ("paths", "/upload", "post", "requestBody", "content", "multipart/form-data",
         "schema", "properties", "callback_url"),
    ),
    "PUT /webhook": (
        "default_url",
        ("components", "schemas", "WebhookSettingsChange", "properties", "default_url"),
    ),
}
_validators = {}


def _url_validator(case, path):
    """A validator of the field's schema as the document gives it (formats checked)."""
    if path not in _validators:
        schema = case.operation.schema.raw_schema
        for key in path:
            schema = schema[key]
        schema = {k: v for k, v in schema.items() if k != "nullable"}
        _validators[path] = jsonschema_rs.validator_for(schema, validate_formats=True)
    return _validators[path]


def _callback_url(case):
    """Stands in for DNS: a URL the document allows becomes one that
    resolves to a permitted address; whether the edit was made."""
    field, path = _URL_FIELDS.get(case.operation.label, (None, None))
    body = case.body
    if field is None or not isinstance(body, dict) or not isinstance(body.get(field), str):
        return False
    if not _url_validator(case, path).is_valid(body[field]):
        return False
    case.body = {**body, field: _CALLBACK}
    return True


_IDEMPOTENCY_KEY = re.compile(r"^[!-~]{1,255}$")


def _idempotency_key(case):
    """A valid `Idempotency-Key` made unique to this case; whether the edit was made."""
    if case.operation.label != "POST /upload" or not case.headers:
        return False
    for name, value in list(case.headers.items()):
        if name.lower() == "idempotency-key" and isinstance(value, str) and _IDEMPOTENCY_KEY.match(value):
            case.headers = {**case.headers, name: f"{value[:200]}-{uuid.uuid4().hex}"}
            return True
    return False


def _files_as_parts(case):
    """A file drawn for `files` as one value, made the array of parts the
    document describes; whether the edit was made."""
    body = case.body
    if case.operation.label != "POST /upload" or not isinstance(body, dict):
        return False
    if not isinstance(body.get("files"), bytes):
        return False
    case.body = {**body, "files": [Binary(body["files"])]}
    return True


def _bounded_stream(case):
    """`GET /events` with `timeout_seconds=1` unless the case's value is
    invalid; whether the edit was made."""
    if case.operation.label != "GET /events":
        return False
    query = dict(case.query or {})
    value = query.get("timeout_seconds")
    valid = value is None or (
        isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 86400
    ) or (isinstance(value, str) and value.isdigit() and 1 <= int(value) <= 86400)
    if not valid:
        return False
    query["timeout_seconds"] = 1
    case.query = query
    return True


@schemathesis.hook
def map_case(context, case):
    edited = _files_as_parts(case)
    edited = _bounded_stream(case) or edited
    edited = _callback_url(case) or edited
    edited = _idempotency_key(case) or edited
    if edited:
        # Valid for valid, so the case keeps the mode it was generated in:
        # take the edits as part of the generated case rather than have it
        # re-judged (a multipart body's single `files` part would be
        # re-judged against the array schema and the case wrongly called
        # negative).
        case._record_starting_state()
    return case


# Upload options whose values include the texts multipart makes of a
# boolean: `texture` lists `true` and `false` (the original's spellings).
_TAKES_BOOLEAN_TEXT = {"texture"}


@schemathesis.hook("filter_body")
def _not_an_empty_list_of_parts(context, body):
    """A multipart body sends an option given as an empty list as no part
    at all: the same request as the option left out, which is valid; and
    one given as a one-element list as that element's single part: the
    same request as the element given alone (every option but `files` is
    a single value, so a list is always the negative case, yet `[785]` is
    `face_limit=785` on the wire). Such a case cannot be told apart from its
    twin on the wire, so it is not sent. (A list of two or more becomes
    repeated parts, which the server refuses with 400.) Likewise a boolean
    goes out as the text `true` or `false`, which for `texture` is a valid
    value: the negative case "a boolean, not a string" is the valid
    request on the wire.

    A body whose parts have media types of their own (the images) reaches
    this hook wrapped, as its fields (`.body`) beside the media types it
    drew; the fields are what is judged."""
    operation = getattr(context, "operation", None)
    fields = getattr(body, "body", body)
    if getattr(operation, "label", None) != "POST /upload" or not isinstance(fields, dict):
        return True
    return not any(
        (isinstance(v, list) and len(v) <= 1)
        or (isinstance(v, bool) and k in _TAKES_BOOLEAN_TEXT)
        for k, v in fields.items()
        if k != "files"
    )


# The answers of job DELETEs, by case id.
_job_deletes = {}


@schemathesis.hook
def after_call(context, case, response):
    if case.operation.label == "DELETE /jobs/{job_id}":
        _job_deletes[case.id] = response.status_code


@schemathesis.hook
def filter_failure(context, failure, case, response):
    """Keeps every failure but a use-after-free whose DELETE was a cancel."""
    return not (
        isinstance(failure, UseAfterFree)
        and _job_deletes.get(failure.deleted_case_id) == 200
    )
