"""The Open Inference Protocol (KServe V2) under ``/v2``, on the serving core ``/v1`` uses.

One model, ``sleeve``, in the version the server serves (the registry's ``v1``, ``v2``, ...).
Its one input, ``image``, is either

- ``BYTES`` of shape [N] or [N, 1], each element one encoded cover: base64 strings in a JSON
  body, or raw bytes with the binary tensor data extension (what ``tritonclient`` sends); or
- ``UINT8`` of shape [N, 224, 224, 3], covers already decoded to the model's RGB input.

Its one output, ``probabilities``, is ``FP32`` [N, len(labels)], in JSON ``data`` or, when
asked (``binary_data``, ``binary_data_output``), as binary data after the JSON header. The
labels that name its columns are in the response's and the model metadata's ``parameters``
(``"labels": "country,rock,..."``). Admission, decoding, batching, the limits and the
deadlines are the serving core's, exactly as for ``POST /v1/predict``.

Errors have V2's body, ``{"error": "<message>"}``, not the rest of the API's. Every route here
is a ``_V2Route``, which turns whatever its handler raises (request validation, the serving
core's errors, a body over the size limit) into that body before the app's handlers see it;
the last route answers any other path under ``/v2`` with a V2 404 in the same way, and a
method a V2 path does not take with a V2 405 and its ``Allow`` header.
"""

from __future__ import annotations

import base64
import binascii
import logging
import struct
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from sleeve_common.logs import REQUEST_ID
from sleeve_common.model_signature import INPUT_NAME, OUTPUT_NAME
from sleeve_common.settings import Settings
from sleeve_common.strict import WHOLE_NUMBERS
from sleeve_inference.batcher import BatchResult
from sleeve_inference.deps import ModelsDep, ServingDep, SettingsDep
from sleeve_inference.errors import SERVING_ERRORS, ApiError, allowed_methods, serving_error
from sleeve_inference.model_holder import ModelHolder
from sleeve_inference.predictor import Predictor
from sleeve_inference.routes.predict import until_answered
from sleeve_inference.serving import NoModelLoaded, Serving

__all__ = ["MODEL_NAME", "router"]

logger = logging.getLogger(__name__)

MODEL_NAME = "sleeve"
_PLATFORM = "onnxruntime_onnx"
_HEADER_LENGTH = "Inference-Header-Content-Length"
_EXTENSIONS = ["binary_tensor_data"]

# --- Errors in V2's body ---------------------------------------------------------------------


class _V2Error(Exception):
    """A refusal with its HTTP status, answered as ``{"error": message}``."""

    def __init__(
        self, status: int, message: str, *, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


def _error_response(exc: Exception) -> JSONResponse:
    """V2's answer to anything a V2 handler raised."""
    if isinstance(exc, SERVING_ERRORS):
        exc = serving_error(exc)
    if isinstance(exc, _V2Error | ApiError):
        status, message, headers = exc.status, exc.message, exc.headers
    elif isinstance(exc, RequestValidationError):
        status, message, headers = 400, _invalid(exc.errors()), None
    elif isinstance(exc, StarletteHTTPException):  # e.g. the body size limit's 413
        status, message, headers = exc.status_code, str(exc.detail), exc.headers
    else:
        logger.exception("unexpected error in a V2 route", exc_info=exc)
        status, headers = 500, None
        message = f"internal error; see the server log for {REQUEST_ID.get()}"
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _invalid(errors: Sequence[Any]) -> str:
    """One line for the first of pydantic's or FastAPI's validation errors."""
    first = errors[0]
    if first.get("type") == "json_invalid":
        return f"the inference request is not valid JSON: {first.get('msg')}"
    where = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
    return f"invalid inference request: {where or 'request'}: {first.get('msg', 'invalid')}"


class _V2Route(APIRoute):
    """A route whose errors all come out in V2's body, whatever the app's handlers do."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def answer_in_v2(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as exc:  # every error, in V2's body; unexpected ones are logged
                return _error_response(exc)

        return answer_in_v2


router = APIRouter(prefix="/v2", tags=["v2"], route_class=_V2Route)


# --- The protocol's bodies (validation and OpenAPI) ------------------------------------------

Parameters = dict[str, bool | int | float | str]


class V2Error(BaseModel):
    """V2's error body."""

    error: str = Field(description="what went wrong")


class V2ServerMetadata(BaseModel):
    """The server's name, version and supported protocol extensions."""

    name: str
    version: str
    extensions: list[str]


class V2Live(BaseModel):
    live: bool


class V2Ready(BaseModel):
    ready: bool


class V2ModelReady(BaseModel):
    name: str
    ready: bool


class V2TensorMetadata(BaseModel):
    """One input or output tensor of the model."""

    name: str
    datatype: str
    shape: list[int] = Field(description="-1 for a dimension of any size")


class V2ModelMetadata(BaseModel):
    """The model's versions, platform, and input and output tensors."""

    name: str
    versions: list[str] = Field(description="the served version, the only one to ask for")
    platform: str
    inputs: list[V2TensorMetadata]
    outputs: list[V2TensorMetadata]
    parameters: dict[str, str] = Field(
        description="`labels`: the output's columns, comma-separated; `image_uint8_shape`: "
        "the shape of `image` when sent as UINT8 pixels instead of BYTES"
    )


_MAX_NAME = 64  # characters of a tensor's name or datatype


class V2RequestInput(BaseModel):
    """One input tensor: its data in JSON, or ``binary_data_size`` bytes after the header."""

    model_config = ConfigDict(strict=True)

    # Bounded: refusals name them, and a 100 KB name came back whole in the 400.
    name: str = Field(max_length=_MAX_NAME)
    shape: list[Annotated[int, Field(ge=0), WHOLE_NUMBERS]]
    datatype: str = Field(max_length=_MAX_NAME)
    parameters: Parameters | None = None
    data: list[Any] | None = Field(
        default=None, description="BYTES: base64 strings; UINT8: integers 0-255 (row-major)"
    )


class V2RequestOutput(BaseModel):
    """An output asked for; ``binary_data``: answer it as bytes after the JSON header."""

    model_config = ConfigDict(strict=True)

    name: str = Field(max_length=_MAX_NAME)
    parameters: Parameters | None = None


class V2InferenceRequest(BaseModel):
    """An inference request (in a binary request, the JSON header before the tensors' bytes).

    Strict, as every request body of the API: a shape of ``["1"]`` is no shape.
    """

    model_config = ConfigDict(strict=True)

    id: str | None = None
    parameters: Parameters | None = None
    inputs: list[V2RequestInput]
    outputs: list[V2RequestOutput] | None = None


class V2ResponseOutput(BaseModel):
    name: str
    datatype: str
    shape: list[int]
    parameters: Parameters | None = None
    data: list[float] | None = None


class V2InferenceResponse(BaseModel):
    """An inference response (in a binary response, the JSON header before the tensor's bytes)."""

    model_name: str
    model_version: str
    id: str | None = None
    parameters: Parameters = Field(description="`labels`: the output's columns, comma-separated")
    outputs: list[V2ResponseOutput]


def _errors(described: Mapping[int, str]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for V2 errors; ``default`` says any other has the same body (and
    keeps FastAPI from listing a 422 these routes never answer)."""
    responses: dict[int | str, dict[str, Any]] = {
        status: {"model": V2Error, "description": text} for status, text in described.items()
    }
    responses["default"] = {"model": V2Error, "description": "any other error, in V2's body"}
    return responses


def _inlined_schema(model: type[BaseModel]) -> dict[str, Any]:
    """``model``'s JSON schema with its ``$defs`` inlined, to sit inside ``openapi_extra``."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return inline(defs[node["$ref"].removeprefix("#/$defs/")])
            return {key: inline(value) for key, value in node.items()}
        if isinstance(node, list):
            return [inline(value) for value in node]
        return node

    result: dict[str, Any] = inline(schema)
    return result


_UNKNOWN_MODEL = "unknown model, or a version other than the served one"
_NO_MODEL = "no model is loaded yet"
_MODEL_ERRORS = _errors({404: _UNKNOWN_MODEL, 503: _NO_MODEL})
_INFER_ERRORS = _errors(
    {
        400: "malformed request: JSON, tensor name, datatype, shape, base64, binary data, or "
        "an element that is not an image (the message names it)",
        404: _UNKNOWN_MODEL,
        413: "more images than SLEEVE_MAX_IMAGES_PER_REQUEST, an element over "
        "SLEEVE_MAX_UPLOAD_BYTES, or too many pixels together",
        503: "no model is loaded, the server is at capacity (Retry-After), or the request "
        "ran past its deadline",
    }
)
_INFER_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": _inlined_schema(V2InferenceRequest)},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}
_INFER_OK: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "the probabilities; with binary output, the JSON header "
        f"({_HEADER_LENGTH} bytes) followed by the tensor's little-endian FP32 bytes",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}

ModelName = Annotated[str, Path(description=f"the model: `{MODEL_NAME}`", examples=[MODEL_NAME])]
ModelVersion = Annotated[str, Path(description="the served version, such as `v1`", examples=["v1"])]


# --- Server and model metadata, health -------------------------------------------------------


@router.get("", summary="Server metadata", response_model=V2ServerMetadata)
async def server_metadata(request: Request) -> V2ServerMetadata:
    """The server's name, version and the protocol extensions it supports."""
    return V2ServerMetadata(name=MODEL_NAME, version=request.app.version, extensions=_EXTENSIONS)


@router.get("/health/live", summary="Server liveness", response_model=V2Live)
async def server_live() -> V2Live:
    """The process is up."""
    return V2Live(live=True)


@router.get(
    "/health/ready",
    summary="Server readiness",
    response_model=V2Ready,
    responses={503: {"model": V2Ready, "description": _NO_MODEL}},
)
async def server_ready(models: ModelsDep) -> JSONResponse:
    """Ready when a model is loaded to answer inference requests."""
    ready = await models.get() is not None
    return JSONResponse(V2Ready(ready=ready).model_dump(), status_code=200 if ready else 503)


@router.get(
    "/models/{model_name}",
    summary="Model metadata",
    response_model=V2ModelMetadata,
    responses=_MODEL_ERRORS,
)
async def model_metadata(model_name: ModelName, models: ModelsDep) -> V2ModelMetadata:
    """The model's served version, its input and output tensors, and its labels."""
    return _metadata(await _loaded(models, model_name, None))


@router.get(
    "/models/{model_name}/versions/{model_version}",
    summary="Model version metadata",
    response_model=V2ModelMetadata,
    responses=_MODEL_ERRORS,
)
async def model_version_metadata(
    model_name: ModelName, model_version: ModelVersion, models: ModelsDep
) -> V2ModelMetadata:
    """As the model metadata; only the served version is known here."""
    return _metadata(await _loaded(models, model_name, model_version))


@router.get(
    "/models/{model_name}/ready",
    summary="Model readiness",
    response_model=V2ModelReady,
    responses={**_MODEL_ERRORS, 503: {"model": V2ModelReady, "description": _NO_MODEL}},
)
async def model_ready(model_name: ModelName, models: ModelsDep) -> JSONResponse:
    """Ready when the model is loaded."""
    return await _readiness(models, model_name, None)


@router.get(
    "/models/{model_name}/versions/{model_version}/ready",
    summary="Model version readiness",
    response_model=V2ModelReady,
    responses={**_MODEL_ERRORS, 503: {"model": V2ModelReady, "description": _NO_MODEL}},
)
async def model_version_ready(
    model_name: ModelName, model_version: ModelVersion, models: ModelsDep
) -> JSONResponse:
    """Ready when this version is the one loaded."""
    return await _readiness(models, model_name, model_version)


def _check_name(name: str) -> None:
    """404 for another model than ``sleeve``."""
    if name != MODEL_NAME:
        raise _V2Error(404, f"unknown model {name!r}; this server serves {MODEL_NAME!r}")


def _check_version(version: str | None, predictor: Predictor) -> None:
    """404 for another version than the served one (``None``: whichever is served)."""
    if version is not None and version != predictor.version:
        raise _V2Error(
            404,
            f"model {MODEL_NAME!r} version {version!r} is not served; "
            f"the served version is {predictor.version!r}",
        )


async def _loaded(models: ModelHolder, name: str, version: str | None) -> Predictor:
    """The served model, checked against the name and version asked for."""
    _check_name(name)
    predictor = await models.get()
    if predictor is None:
        raise NoModelLoaded(models.last_error or "no model is loaded yet")
    _check_version(version, predictor)
    return predictor


async def _readiness(models: ModelHolder, name: str, version: str | None) -> JSONResponse:
    try:
        await _loaded(models, name, version)
    except NoModelLoaded:
        return JSONResponse(V2ModelReady(name=name, ready=False).model_dump(), status_code=503)
    return JSONResponse(V2ModelReady(name=name, ready=True).model_dump())


def _metadata(predictor: Predictor) -> V2ModelMetadata:
    size = predictor.input_size
    return V2ModelMetadata(
        name=MODEL_NAME,
        versions=[predictor.version],
        platform=_PLATFORM,
        inputs=[V2TensorMetadata(name=INPUT_NAME, datatype="BYTES", shape=[-1])],
        outputs=[
            V2TensorMetadata(name=OUTPUT_NAME, datatype="FP32", shape=[-1, len(predictor.labels)])
        ],
        parameters={
            "labels": ",".join(predictor.labels),
            "image_uint8_shape": f"[-1, {size}, {size}, 3]",
        },
    )


# --- Inference -------------------------------------------------------------------------------

_INFER_DOC = f"""Genre probabilities for each image of the `image` input.

Send `image` as `BYTES` [N] (or [N, 1]) encoded covers, base64 strings in JSON or raw bytes
with the binary tensor data extension (`{_HEADER_LENGTH}` and `binary_data_size`), or as `UINT8`
[N, 224, 224, 3] RGB pixels. The `probabilities` output is `FP32` [N, labels]; its columns are
the response's `labels` parameter. Ask for it as binary data with `binary_data` on the output
(or `binary_data_output` on the request).
"""


@router.post(
    "/models/{model_name}/infer",
    summary="Inference",
    description=_INFER_DOC,
    response_model=V2InferenceResponse,
    responses={**_INFER_OK, **_INFER_ERRORS},
    openapi_extra=_INFER_BODY,
)
async def infer(
    request: Request, model_name: ModelName, serving: ServingDep, settings: SettingsDep
) -> Response:
    """V2 inference on the served version."""
    return await _infer(request, serving, settings, model_name, None)


@router.post(
    "/models/{model_name}/versions/{model_version}/infer",
    summary="Inference on a version",
    description=_INFER_DOC + "\nThe version must be the served one.",
    response_model=V2InferenceResponse,
    responses={**_INFER_OK, **_INFER_ERRORS},
    openapi_extra=_INFER_BODY,
)
async def infer_version(
    request: Request,
    model_name: ModelName,
    model_version: ModelVersion,
    serving: ServingDep,
    settings: SettingsDep,
) -> Response:
    """V2 inference on a version, which must be the served one."""
    return await _infer(request, serving, settings, model_name, model_version)


@dataclass(frozen=True)
class _Call:
    """An inference request: its JSON header and the binary data of its ``image`` input."""

    header: V2InferenceRequest
    image: V2RequestInput
    binary: memoryview | None  # the input's binary data, or None when it came as JSON data
    binary_output: bool


async def _infer(
    request: Request, serving: Serving, settings: Settings, name: str, version: str | None
) -> Response:
    """Check the model, read the ``image`` input, then admit, decode and run it."""
    _check_name(name)
    predictor = serving.model()  # 503 before reading the body when nothing is served
    _check_version(version, predictor)
    call = _read_call(await request.body(), request.headers.get(_HEADER_LENGTH))
    max_images = settings.max_images_per_request
    if call.image.datatype == "BYTES":
        images: list[bytes] | np.ndarray = _encoded_images(
            call, max_images=max_images, max_bytes=settings.max_upload_bytes
        )
    elif call.image.datatype == "UINT8":
        images = _pixels(call, max_images=max_images, size=predictor.input_size)
    else:
        raise _V2Error(
            400,
            f"input {INPUT_NAME!r} has datatype {call.image.datatype}; send BYTES (encoded images) "
            f"or UINT8 (pixels [N, {predictor.input_size}, {predictor.input_size}, 3])",
        )
    deadline_s = settings.request_deadline_s
    with serving.admit(len(images)):
        if isinstance(images, list):
            serving.check_pixels(images)
        result = await until_answered(request, deadline_s, serving.run(images))
    for index, error in enumerate(result.errors):
        if error is not None:
            raise _V2Error(
                400, f"input {INPUT_NAME!r} element {index} is not a usable image: {error}"
            )
    return _answer(call, result)


def _read_call(body: bytes, header_length: str | None) -> _Call:
    """Split the body into the JSON header and binary data, validate, find ``image``."""
    length = len(body) if header_length is None else _header_length(header_length, len(body))
    try:
        # Only a binary request's JSON is sliced off (copied); its binary data is not.
        header = V2InferenceRequest.model_validate_json(
            body if length == len(body) else body[:length]
        )
    except ValidationError as exc:
        raise _V2Error(400, _invalid(exc.errors())) from None
    names = [tensor.name for tensor in header.inputs]
    if names != [INPUT_NAME]:
        shown = f"{names[:5]}" if len(names) <= 5 else f"{names[:5]} and {len(names) - 5} more"
        raise _V2Error(400, f"the model takes one input, {INPUT_NAME!r}; the request has {shown}")
    [binary] = _binary_data(header.inputs, memoryview(body)[length:])
    return _Call(
        header=header, image=header.inputs[0], binary=binary, binary_output=_binary_output(header)
    )


def _header_length(value: str, body_length: int) -> int:
    if not value.isdigit() or not 0 < int(value) <= body_length:
        raise _V2Error(400, f"{_HEADER_LENGTH} is {value!r}; the body has {body_length} bytes")
    return int(value)


def _binary_data(inputs: list[V2RequestInput], data: memoryview) -> list[memoryview | None]:
    """Each input's slice of the binary data after the header (binary tensor data extension)."""
    slices: list[memoryview | None] = []
    offset = 0
    for tensor in inputs:
        size = (tensor.parameters or {}).get("binary_data_size")
        if size is None:
            slices.append(None)
            continue
        if type(size) is not int or size < 0:
            raise _V2Error(400, f"input {tensor.name!r}: binary_data_size must be a byte count")
        if tensor.data is not None:
            raise _V2Error(400, f"input {tensor.name!r} has both data and binary_data_size")
        if offset + size > len(data):
            raise _V2Error(
                400,
                f"input {tensor.name!r} declares {size} bytes of binary data; "
                f"the body has {len(data) - offset} left",
            )
        slices.append(data[offset : offset + size])
        offset += size
    if offset != len(data):
        raise _V2Error(400, f"the body has {len(data) - offset} bytes past the inputs' binary data")
    return slices


def _binary_output(header: V2InferenceRequest) -> bool:
    """Whether to answer ``probabilities`` as binary data; refuses other outputs."""
    default = (header.parameters or {}).get("binary_data_output") is True
    if not header.outputs:
        return default
    names = [output.name for output in header.outputs]
    if names != [OUTPUT_NAME]:
        raise _V2Error(
            400, f"the model has one output, {OUTPUT_NAME!r}; the request asks for {names}"
        )
    parameters = header.outputs[0].parameters or {}
    if "classification" in parameters:
        raise _V2Error(
            400,
            "the classification extension is not supported; "
            "the response's labels parameter names the probabilities' columns",
        )
    return parameters.get("binary_data", default) is True


def _image_count(shape: list[int], *, max_images: int) -> int:
    """N of an ``image`` shape, between 1 and ``max_images`` (413 above)."""
    count = shape[0] if shape else 0
    if count == 0:
        raise _V2Error(400, f"input {INPUT_NAME!r} has shape {shape}: no images")
    if count > max_images:
        raise _V2Error(
            413, f"input {INPUT_NAME!r} holds {count} images; at most {max_images} per request"
        )
    return count


def _encoded_images(call: _Call, *, max_images: int, max_bytes: int) -> list[bytes]:
    """The BYTES elements: one encoded image each, at most ``max_bytes`` long."""
    shape = call.image.shape
    if len(shape) not in (1, 2) or shape[1:] not in ([], [1]):
        raise _V2Error(
            400, f"BYTES input {INPUT_NAME!r} must have shape [N] or [N, 1]; got {shape}"
        )
    count = _image_count(shape, max_images=max_images)
    if call.binary is not None:
        elements = _length_prefixed(call.binary, count=count, max_bytes=max_bytes)
    elif call.image.data is not None:
        elements = _base64_elements(call.image.data, max_bytes=max_bytes)
    else:
        raise _V2Error(400, f"input {INPUT_NAME!r} has neither data nor binary_data_size")
    if len(elements) != count:
        raise _V2Error(400, f"input {INPUT_NAME!r} has shape {shape} but {len(elements)} elements")
    return elements


def _length_prefixed(data: memoryview, *, count: int, max_bytes: int) -> list[bytes]:
    """BYTES binary data: each element as a little-endian uint32 length, then its bytes."""
    elements: list[bytes] = []
    offset = 0
    while offset < len(data) and len(elements) <= count:
        index = len(elements)
        if offset + 4 > len(data):
            raise _V2Error(400, f"input {INPUT_NAME!r} element {index}: truncated length prefix")
        (size,) = struct.unpack_from("<I", data, offset)
        offset += 4
        if size > max_bytes:
            raise _V2Error(413, f"input {INPUT_NAME!r} element {index} is over {max_bytes} bytes")
        if offset + size > len(data):
            raise _V2Error(
                400,
                f"input {INPUT_NAME!r} element {index} declares {size} bytes; "
                f"{len(data) - offset} are left",
            )
        elements.append(bytes(data[offset : offset + size]))
        offset += size
    return elements


def _base64_elements(data: list[Any], *, max_bytes: int) -> list[bytes]:
    """BYTES in JSON: each element a base64 string (nested lists flattened row-major)."""
    elements: list[bytes] = []
    for index, value in enumerate(_flat(data)):
        if not isinstance(value, str):
            raise _V2Error(400, f"input {INPUT_NAME!r} element {index} is not a string of base64")
        try:
            element = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise _V2Error(
                400, f"input {INPUT_NAME!r} element {index} is not valid base64: {exc}"
            ) from None
        if len(element) > max_bytes:
            raise _V2Error(413, f"input {INPUT_NAME!r} element {index} is over {max_bytes} bytes")
        elements.append(element)
    return elements


def _flat(data: list[Any]) -> list[Any]:
    flat: list[Any] = []
    for value in data:
        flat.extend(_flat(value) if isinstance(value, list) else [value])
    return flat


def _pixels(call: _Call, *, max_images: int, size: int) -> np.ndarray:
    """UINT8 pixels [N, size, size, 3], from binary data or JSON integers 0-255."""
    shape = call.image.shape
    if len(shape) != 4 or shape[1:] != [size, size, 3]:
        raise _V2Error(
            400, f"UINT8 input {INPUT_NAME!r} must have shape [N, {size}, {size}, 3]; got {shape}"
        )
    count = _image_count(shape, max_images=max_images)
    expected = count * size * size * 3
    if call.binary is not None:
        if len(call.binary) != expected:
            raise _V2Error(
                400,
                f"input {INPUT_NAME!r} has {len(call.binary)} bytes of binary data; "
                f"shape {shape} needs {expected}",
            )
        return np.frombuffer(call.binary, dtype=np.uint8).reshape(shape)
    if call.image.data is None:
        raise _V2Error(400, f"input {INPUT_NAME!r} has neither data nor binary_data_size")
    return _json_pixels(call.image.data, shape, expected)


def _json_pixels(data: list[Any], shape: list[int], expected: int) -> np.ndarray:
    try:
        values = np.asarray(data).ravel()
    except ValueError:
        values = np.asarray([], dtype=np.float64)  # ragged: refused below
    if values.dtype.kind not in "iu" or values.size != expected:
        raise _V2Error(
            400, f"input {INPUT_NAME!r} must hold {expected} integers 0-255 for shape {shape}"
        )
    if values.min() < 0 or values.max() > 255:
        raise _V2Error(400, f"input {INPUT_NAME!r} has values outside 0-255")
    return values.astype(np.uint8).reshape(shape)


def _answer(call: _Call, result: BatchResult) -> Response:
    """The inference response: ``probabilities`` in JSON, or binary after the JSON header."""
    probabilities = np.ascontiguousarray(result.probabilities, dtype="<f4")
    output = V2ResponseOutput(name=OUTPUT_NAME, datatype="FP32", shape=list(probabilities.shape))
    response = V2InferenceResponse(
        model_name=MODEL_NAME,
        model_version=result.predictor.version,
        id=call.header.id,
        parameters={"labels": ",".join(result.predictor.labels)},
        outputs=[output],
    )
    if not call.binary_output:
        output.data = probabilities.ravel().tolist()
        return Response(response.model_dump_json(exclude_none=True), media_type="application/json")
    output.parameters = {"binary_data_size": probabilities.nbytes}
    header = response.model_dump_json(exclude_none=True).encode()
    return Response(
        header + probabilities.tobytes(),
        media_type="application/octet-stream",
        headers={_HEADER_LENGTH: str(len(header))},
    )


# Last: any other path or method under /v2 gets a V2 404 or 405 rather than the rest of the
# API's (every method, so none falls through to Starlette's 405).
@router.api_route(
    "/{path:path}",
    methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"],
    include_in_schema=False,
)
async def unknown_endpoint(request: Request, path: str) -> Response:
    """Any other path under ``/v2``: a V2 404; a V2 path with a method it does not take: 405."""
    others = (
        route
        for route in router.routes
        if isinstance(route, APIRoute) and route.endpoint is not unknown_endpoint
    )
    allowed = allowed_methods(others, request.scope)
    if allowed:
        raise _V2Error(
            405,
            f"{request.method} is not allowed on /v2/{path}; it takes {', '.join(allowed)}",
            headers={"Allow": ", ".join(allowed)},
        )
    raise _V2Error(404, f"no V2 endpoint {request.method} /v2/{path}")
