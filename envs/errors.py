"""The one exception type that reaches users: a single sentence naming the file, line or field."""


class UserError(Exception):
    """Bad input from the user (config, data file, model path, knob value).

    The CLI prints the message as one sentence and exits non-zero, never a traceback. Raise it with a
    message that names what is wrong and where, e.g. ``data.jsonl:12: field 'answer' is missing``.
    """


def pydantic_message(err, source: str, *, prefix: str = "") -> str:
    """One sentence from a pydantic ValidationError: the first failing field and why.

    prefix: the dotted path of the validated object inside a larger config (e.g. ``env.knobs``).
    """
    first = err.errors()[0]
    loc = ".".join(p for p in (prefix, *(str(p) for p in first.get("loc", ()))) if p) or "(top level)"
    msg = first.get("msg", "invalid value")
    if first.get("type") == "extra_forbidden":
        msg = "unknown key"
    msg = msg.removeprefix("Value error, ")
    return f"{source}: field '{loc}': {msg}"
