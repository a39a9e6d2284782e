"""A strict multipart/form-data reader for artifact uploads (stdlib only, exact bytes, small field set)."""

from __future__ import annotations

from email.message import Message

from softprompt.errors import InputError


def _params(header: str, value: str) -> Message:
    m = Message()
    m[header] = value
    return m


def parse_form(body: bytes, content_type: str, allowed: tuple[str, ...]) -> dict[str, tuple[str | None, bytes]]:
    """-> {field name: (file name or None, bytes)} for a multipart/form-data body. Only `allowed` fields, once each."""
    ct = _params("content-type", content_type)
    if ct.get_content_type() != "multipart/form-data":
        raise InputError("upload the artifact as multipart/form-data with the fields "
                         f"{', '.join(repr(a) for a in allowed)} (got content type {ct.get_content_type()!r})")
    boundary = ct.get_param("boundary", header="content-type")
    if not isinstance(boundary, str) or not 1 <= len(boundary) <= 200:
        raise InputError("multipart body without a valid boundary parameter")
    delim = b"--" + boundary.encode("latin-1")
    if not body.startswith(delim):
        raise InputError("malformed multipart body: it does not start with its boundary")
    sections = body[len(delim):].split(b"\r\n" + delim)
    out: dict[str, tuple[str | None, bytes]] = {}
    closed = False
    for sec in sections:
        if sec.startswith(b"--"):
            closed = True
            break
        if not sec.startswith(b"\r\n") or b"\r\n\r\n" not in sec:
            raise InputError("malformed multipart body: a part lacks its headers")
        head, data = sec[2:].split(b"\r\n\r\n", 1)
        try:
            lines = head.decode("utf-8").split("\r\n")
        except UnicodeDecodeError:
            raise InputError("malformed multipart body: part headers are not UTF-8") from None
        disp = next((ln.split(":", 1)[1].strip() for ln in lines if ln.lower().startswith("content-disposition:")),
                    None)
        if disp is None:
            raise InputError("malformed multipart body: a part has no Content-Disposition header")
        m = _params("content-disposition", disp)
        name = m.get_param("name", header="content-disposition")
        if name not in allowed:
            raise InputError(f"unexpected upload field {name!r}: send only {', '.join(repr(a) for a in allowed)}")
        if name in out:
            raise InputError(f"upload field {name!r} appears twice")
        out[name] = (m.get_filename(), data)
    if not closed:
        raise InputError("malformed multipart body: the closing boundary is missing (truncated upload?)")
    return out
