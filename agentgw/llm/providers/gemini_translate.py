"""OpenAI chat completions and embeddings requests → Gemini `generateContent` / `batchEmbedContents` requests, as
pure functions; JSON Schemas are cut down to the OpenAPI subset Gemini's `Schema` accepts (`gemini_schema`).
"""

from __future__ import annotations

from typing import Any

import orjson

from agentgw import jsontext
from agentgw.llm.providers import chat_shapes as chat

# Gemini 3 rejects a replayed function call without the thought signature it came with; clients that drop
# `extra_content` get this documented bypass value instead (ai.google.dev/gemini-api/docs/thought-signatures).
SKIP_SIGNATURE = "skip_thought_signature_validator"

# The keys of the SDK's `types.Schema` that the Gemini Developer API accepts ($ref/$defs are inlined here;
# additionalProperties is refused outside Vertex AI, like $schema, oneOf, allOf, const and the rest).
SCHEMA_KEYS = frozenset(
    {
        "type", "format", "title", "description", "nullable", "enum", "items", "properties", "required",
        "minItems", "maxItems", "minProperties", "maxProperties", "minLength", "maxLength", "pattern",
        "minimum", "maximum", "anyOf", "propertyOrdering", "default", "example",
    }
)  # fmt: skip
FORMATS = {"STRING": {"enum", "date-time"}, "INTEGER": {"int32", "int64"}, "NUMBER": {"float", "double"}}
TYPES = {"string", "number", "integer", "boolean", "array", "object"}
TOOL_MODES = {"auto": "AUTO", "none": "NONE", "required": "ANY"}

_AUDIO = {"wav": "audio/wav", "mp3": "audio/mp3"}


def resource(model: str) -> str:
    """The model's resource name: `models/{model}`, or a tuned model's `tunedModels/{id}` as configured."""
    return model if model.startswith(("models/", "tunedModels/")) else f"models/{model}"


# -- JSON Schema → Gemini Schema ---------------------------------------------------------------------------


def gemini_schema(schema: Any) -> dict[str, Any]:
    """The Gemini `Schema` for a JSON Schema: local `$ref`s inlined (a recursive one becomes a plain OBJECT),
    `type: [x, "null"]` and `anyOf` with null → `nullable`, `oneOf` → `anyOf`, `allOf` merged, `const` → a
    one-value enum, enums of anything but strings and unknown formats dropped, `required` limited to the declared
    properties, types upper-cased, every other key (additionalProperties, $schema, …) stripped."""
    if not isinstance(schema, dict):
        return {}
    defs = {**_dict(schema.get("definitions")), **_dict(schema.get("$defs"))}
    return _convert(schema, defs, ())


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _convert(node: Any, defs: dict[str, Any], seen: tuple[str, ...]) -> dict[str, Any]:
    resolved = _resolve(node, defs, seen)
    if resolved is None:
        return {"type": "OBJECT"}  # recursion (or a reference we cannot see) has no Gemini form
    node, seen = resolved
    for sub in _list(node.pop("allOf", None)):  # merged as JSON Schema, then converted once
        part = _resolve(sub, defs, seen)
        if part is None:
            continue
        raw = part[0]
        node["properties"] = {**_dict(raw.pop("properties", None)), **_dict(node.get("properties"))}
        node["required"] = [*_list(raw.pop("required", None)), *_list(node.get("required"))]
        node = {**raw, **node}
    if "oneOf" in node and "anyOf" not in node:
        node["anyOf"] = node.pop("oneOf")
    out: dict[str, Any] = {}
    kind = node.get("type")
    kinds = [k.lower() for k in ([kind] if isinstance(kind, str) else _list(kind)) if isinstance(k, str)]
    if "null" in kinds:
        out["nullable"] = True
        kinds = [k for k in kinds if k != "null"]
    kinds = [k for k in kinds if k in TYPES]
    if not kinds and "anyOf" not in node:  # a schema that leaves its type implicit (Gemini needs one)
        kinds = ["object"] if "properties" in node else ["array"] if "items" in node else []
    if len(kinds) == 1:
        out["type"] = kinds[0].upper()
    elif len(kinds) > 1:
        out["anyOf"] = [{"type": k.upper()} for k in kinds]
    if "const" in node and isinstance(node["const"], str):
        node["enum"] = [node["const"]]
        out.setdefault("type", "STRING")
    enum = _list(node.get("enum"))
    if enum:
        if None in enum:
            out["nullable"] = True
        values = [v for v in enum if v is not None]
        if values and all(isinstance(v, str) for v in values):
            out["enum"] = values
            out.setdefault("type", "STRING")
    for key, value in node.items():
        if key not in SCHEMA_KEYS or key in out or key in ("type", "enum"):
            continue
        if key == "properties":
            props = {str(k): _convert(v, defs, seen) for k, v in _dict(value).items()}
            if props:
                out["properties"] = props
        elif key == "items":
            out["items"] = _convert(value, defs, seen)
        elif key == "anyOf":
            _any_of(out, [_convert(v, defs, seen) for v in _list(value)])
        else:
            out[key] = value
    if "format" in out and out["format"] not in FORMATS.get(out.get("type", ""), ()):
        del out["format"]
    props = _dict(out.get("properties"))
    if "required" in out:
        required = [r for r in _list(out["required"]) if isinstance(r, str) and r in props]
        out["required"] = list(dict.fromkeys(required))
        if not out["required"]:
            del out["required"]
    if len(props) > 1 and "propertyOrdering" not in out:
        out["propertyOrdering"] = list(props)  # the SDK does the same: answers keep the schema's key order
    return out


def _resolve(
    node: Any, defs: dict[str, Any], seen: tuple[str, ...]
) -> tuple[dict[str, Any], tuple[str, ...]] | None:
    """A copy of `node` with its local `$ref` (if any) filled in from `defs`; None for a recursive or unknown one."""
    if not isinstance(node, dict):
        return {}, seen
    node = dict(node)
    ref = node.pop("$ref", None)
    if not isinstance(ref, str):
        return node, seen
    name = ref.rsplit("/", 1)[-1]
    if name in seen or not isinstance(defs.get(name), dict):
        return None
    return {**defs[name], **node}, (*seen, name)


def _any_of(out: dict[str, Any], options: list[dict[str, Any]]) -> None:
    """`anyOf` without its null member (that becomes nullable); a single remaining option is merged in."""
    kept = [o for o in options if o and o != {"nullable": True}]
    if len(kept) < len(options):
        out["nullable"] = True
    if len(kept) == 1:
        for key, value in kept[0].items():
            out.setdefault(key, value)
    elif kept:
        out["anyOf"] = kept


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


# -- messages ----------------------------------------------------------------------------------------------


def _inline(url: Any, what: str) -> dict[str, Any]:
    inline = chat.data_url(url)
    if inline is None:
        raise chat.unsupported(f"Gemini takes {what} inline only: send a base64 data URL.", "messages")
    return {"inlineData": {"mimeType": inline[0], "data": inline[1]}}


def _audio(part: dict[str, Any]) -> dict[str, Any]:
    audio = part.get("input_audio")
    if not isinstance(audio, dict):
        raise chat.unsupported_part("input_audio", "Gemini")
    mime = _AUDIO.get(str(audio.get("format")), f"audio/{audio.get('format')}")
    return {"inlineData": {"mimeType": mime, "data": str(audio.get("data") or "")}}


def _file(part: dict[str, Any]) -> dict[str, Any]:
    file = part.get("file")
    if not isinstance(file, dict):
        raise chat.unsupported_part("file", "Gemini")
    return _inline(file.get("file_data"), "files")


# Gemini parts for OpenAI user content: text, images (data URLs), input audio, files (data URLs).
PARTS: dict[str, chat.PartReader] = {
    "text": lambda part: {"text": str(part.get("text") or "")},
    "image_url": lambda part: _inline(chat.image_url(part), "images"),
    "input_audio": _audio,
    "file": _file,
}


def _function_calls(raw: Any, names: dict[str, str], model: str) -> list[dict[str, Any]]:
    """functionCall parts for an assistant's tool calls, each with the thought signature it came with."""
    if not isinstance(raw, list):
        raise chat.unsupported("An assistant message's tool_calls must be an array.", "messages")
    parts = []
    for call in raw:
        name, args = chat.assistant_call(call, "Gemini")
        if isinstance(call.get("id"), str):
            names[call["id"]] = name
        part: dict[str, Any] = {"functionCall": {"name": name, "args": args}}
        google = _dict(_dict(call.get("extra_content")).get("google"))
        if isinstance(google.get("thought_signature"), str):
            part["thoughtSignature"] = google["thought_signature"]
        parts.append(part)
    if parts and "gemini-3" in model and not any("thoughtSignature" in p for p in parts):
        parts[0]["thoughtSignature"] = SKIP_SIGNATURE
    return parts


def _function_response(m: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    call_id = m.get("tool_call_id")
    name = names.get(call_id) if isinstance(call_id, str) else None
    name = name or (m.get("name") if isinstance(m.get("name"), str) else None)
    if name is None:
        raise chat.unsupported(
            "A tool message needs the tool_call_id of an earlier assistant tool call (Gemini answers by name).",
            "messages",
        )
    text = chat.text_only(m.get("content"), "A tool")
    try:
        parsed = jsontext.loads(text) if text.startswith("{") else None
    except orjson.JSONDecodeError:
        parsed = None
    response = parsed if isinstance(parsed, dict) else {"result": text}
    return {"functionResponse": {"name": name, "response": response}}


def contents(messages: list[Any], model: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """System instruction parts and the `contents` turns (role user/model, same-role neighbours merged)."""
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    names: dict[str, str] = {}  # tool call id → function name (a functionResponse names its function)

    def push(role: str, parts: list[dict[str, Any]]) -> None:
        if not parts:
            return
        if turns and turns[-1]["role"] == role:
            turns[-1]["parts"] += parts
        else:
            turns.append({"role": role, "parts": parts})

    for m in messages:
        if not isinstance(m, dict):
            raise chat.unsupported("Each message must be an object.", "messages")
        role = m.get("role")
        if role in ("system", "developer"):
            text = chat.text_only(m.get("content"), "A system")
            if text:
                system.append({"text": text})
        elif role == "user":
            push("user", chat.user_content(m.get("content"), "Gemini", PARTS))
        elif role == "assistant":
            text = chat.text_only(m.get("content"), "An assistant")
            calls = _function_calls(m.get("tool_calls") or [], names, model)
            push("model", ([{"text": text}] if text else []) + calls)
        elif role in ("tool", "function"):
            push("user", [_function_response(m, names)])
        else:
            raise chat.unsupported(f"Messages with role {role!r} are not supported for Gemini.", "messages")
    return system, turns


# -- tools and generation config ---------------------------------------------------------------------------


def _declaration(tool: Any) -> dict[str, Any]:
    fn = chat.function_tool(tool, "Gemini")
    out: dict[str, Any] = {"name": fn["name"]}
    if isinstance(fn.get("description"), str):
        out["description"] = fn["description"]
    params = gemini_schema(fn.get("parameters"))
    if params.get("properties"):  # Gemini refuses an OBJECT without properties: a tool without arguments
        out["parameters"] = params
    return out


def _tool_config(choice: Any, declarations: list[dict[str, Any]]) -> dict[str, Any]:
    """functionCallingConfig for tool_choice; `allowed_tools` narrows the declarations (kept in place)."""
    if isinstance(choice, str) and choice in TOOL_MODES:
        return {"mode": TOOL_MODES[choice]}
    if isinstance(choice, dict) and choice.get("type") == "function":
        fn = choice.get("function")
        if isinstance(fn, dict) and isinstance(fn.get("name"), str):
            return {"mode": "ANY", "allowedFunctionNames": [fn["name"]]}
    if isinstance(choice, dict) and choice.get("type") == "allowed_tools":
        allowed = _dict(choice.get("allowed_tools"))
        wanted = {
            _dict(t.get("function")).get("name") for t in _list(allowed.get("tools")) if isinstance(t, dict)
        }
        declarations[:] = [d for d in declarations if d["name"] in wanted]
        if allowed.get("mode") in ("auto", "required"):
            return {"mode": TOOL_MODES[allowed["mode"]]}
    raise chat.unsupported(
        "tool_choice must be auto, none, required, a named function or allowed_tools.", "tool_choice"
    )


def generation_config(payload: dict[str, Any]) -> dict[str, Any]:
    """Sampling, length, stop, candidates and structured output, in Gemini's `generationConfig` names."""
    out: dict[str, Any] = {}
    for name, key in (
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
        ("seed", "seed"),
    ):
        if payload.get(name) is not None:
            out[key] = payload[name]
    limit = chat.max_tokens(payload)
    if isinstance(limit, int):
        out["maxOutputTokens"] = limit
    stops = chat.stop_sequences(payload)
    if stops:
        out["stopSequences"] = stops
    n = payload.get("n")
    if isinstance(n, int) and n != 1:
        if payload.get("stream") is True:
            raise chat.unsupported(
                "Gemini streams one candidate per request; n must be 1 when streaming.", "n"
            )
        out["candidateCount"] = n
    fmt = payload.get("response_format")
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "json_object":
        out["responseMimeType"] = "application/json"
    elif kind == "json_schema":
        spec = _dict(fmt.get("json_schema")) if isinstance(fmt, dict) else {}
        out["responseMimeType"] = "application/json"
        if isinstance(spec.get("schema"), dict):
            out["responseSchema"] = gemini_schema(spec["schema"])
    elif kind not in (None, "text"):
        raise chat.unsupported(f"response_format {kind!r} is not supported for Gemini.", "response_format")
    return out


def request_to_gemini(payload: dict[str, Any], model: str) -> dict[str, Any]:
    """The `generateContent` body for an OpenAI chat completions request, sent to upstream `model` (the model is
    in the URL, and streaming is the URL's choice too, so neither is in the body)."""
    system, turns = contents(_list(payload.get("messages")), model)
    out: dict[str, Any] = {"contents": turns}
    if system:
        out["systemInstruction"] = {"parts": system}
    tools = payload.get("tools")
    if isinstance(tools, list) and tools:
        declarations = [_declaration(t) for t in tools]
        if payload.get("tool_choice") is not None:
            out["toolConfig"] = {"functionCallingConfig": _tool_config(payload["tool_choice"], declarations)}
        out["tools"] = [{"functionDeclarations": declarations}]
    config = generation_config(payload)
    if config:
        out["generationConfig"] = config
    return out


def embeddings_request(payload: dict[str, Any], model: str) -> dict[str, Any]:
    """The `batchEmbedContents` body for an OpenAI embeddings request (text input only)."""
    raw = payload.get("input")
    texts = [raw] if isinstance(raw, str) else raw
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise chat.unsupported("Gemini embeds text: input must be a string or an array of strings.", "input")
    base: dict[str, Any] = {"model": resource(model)}
    if isinstance(payload.get("dimensions"), int):
        base["outputDimensionality"] = payload["dimensions"]
    return {"requests": [{**base, "content": {"parts": [{"text": t}]}} for t in texts]}
