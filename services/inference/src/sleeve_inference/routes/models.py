"""The model registry over HTTP."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response

from sleeve_common.exceptions import ObjectNotFound
from sleeve_common.model_card import ModelCard
from sleeve_common.models import ModelVersion
from sleeve_common.registry import (
    REPORT_IMAGES,
    get_model_version,
    list_model_versions,
    promote,
)
from sleeve_inference.deps import ApiKey, ModelsDep, RuntimeDep
from sleeve_inference.errors import ApiError, error_responses
from sleeve_inference.schemas import VERSION_PATTERN, ModelDetail, ModelSummary

__all__ = ["router"]

router = APIRouter(tags=["models"])

# Report images by their file name in the URL (`confusion-matrix`), to their name in
# ``report_keys`` (`confusion_matrix`). Their route ends in `.png`, so it cannot catch
# `/v1/models/{version}/promote` or any other sub-resource.
_IMAGE_FILES = {name.replace("_", "-"): name for name in REPORT_IMAGES}
_IMAGE_LIST = ", ".join(f"`{file}`" for file in _IMAGE_FILES)

Version = Annotated[
    str,
    Path(
        description="a registered version, such as `v1`", examples=["v1"], pattern=VERSION_PATTERN
    ),
]

ImageFile = Annotated[
    str,
    Path(description=f"a report image: {_IMAGE_LIST}", examples=["confusion-matrix"]),
]


def _summary(v: ModelVersion, request: Request) -> dict[str, object]:
    return {
        "version": v.version,
        "stage": v.stage,
        "labels": v.labels,
        "accuracy": v.metrics.get("accuracy"),
        "macro_f1": v.metrics.get("macro_f1"),
        "created_at": v.created_at,
        "images": {
            name: str(request.url_for("model_report_image", version=v.version, image=file))
            for file, name in _IMAGE_FILES.items()
            if name in v.report_keys
        },
        "card_url": str(request.url_for("model_card", version=v.version))
        if "model_card" in v.report_keys
        else None,
    }


_NO_VERSION = (404, "no such model version")


@router.get("/v1/models", response_model=list[ModelSummary], responses=error_responses(503))
async def models_list(runtime: RuntimeDep, request: Request) -> list[dict[str, object]]:
    """Every registered model version, newest first, with links to its report images."""
    return [_summary(v, request) for v in await list_model_versions(db=runtime.db)]


@router.get(
    "/v1/models/{version}",
    response_model=ModelDetail,
    responses=error_responses(_NO_VERSION, 422, 503),
)
async def model_detail(
    version: Version, runtime: RuntimeDep, request: Request
) -> dict[str, object]:
    """The evaluation report of one version (every metric on its test split, links to its
    report images), its labels and input spec, and its fp16/int8 variants with their scores
    and speed."""
    v = await get_model_version(db=runtime.db, version=version)
    return {
        **_summary(v, request),
        "metrics": v.metrics,
        "input_spec": v.input_spec,
        "onnx_sha256": v.onnx_sha256,
        "onnx_bytes": v.onnx_bytes,
        "promotion": v.promotion,
        "variants": v.variants,
    }


@router.get(
    "/v1/models/{version}/card",
    name="model_card",
    response_model=ModelCard,
    responses=error_responses((404, "no such model version, or it has no model card"), 422, 503),
)
async def model_card(version: Version, runtime: RuntimeDep) -> ModelCard:
    """The version's model card, stored beside its ONNX file when it was trained: labels,
    input spec, metrics and baselines, the dataset and the sources of its covers, the
    training options, the file's sha256 and the versions of the packages that made it."""
    v = await get_model_version(db=runtime.db, version=version)
    key = v.report_keys.get("model_card")
    if key is None:
        raise ApiError(404, "not_found", f"model {version} has no model card")
    return ModelCard.model_validate_json(
        await _stored(runtime, key, f"model {version}'s model card")
    )


async def _stored(runtime: RuntimeDep, key: str, what: str) -> bytes:
    """A report file from the store; one that went missing there is a 404, not a 500."""
    try:
        return await runtime.store.get(key)
    except ObjectNotFound:
        raise ApiError(404, "not_found", f"{what} is missing from the store") from None


_IMAGE_ROUTE: dict[str, Any] = {
    "response_class": Response,
    "responses": {
        200: {"content": {"image/png": {}}},
        **error_responses((404, "no such model version, or it has no such image"), 422, 503),
    },
}


@router.get("/v1/models/{version}/{image}.png", name="model_report_image", **_IMAGE_ROUTE)
async def model_report_image(version: Version, image: ImageFile, runtime: RuntimeDep) -> Response:
    """One report image of the version (PNG, titled with the version): `confusion-matrix` on
    its test split, `training-curves` (loss and accuracy per epoch), `reliability-diagram`
    (accuracy against confidence, with the ECE) or `cover-grid` (test covers with their true
    and predicted genre, the most confident mistakes included)."""
    name = _IMAGE_FILES.get(image)
    if name is None:  # not echoed: it may be anything, of any length
        raise ApiError(404, "not_found", f"no such report image; there are {_IMAGE_LIST}")
    v = await get_model_version(db=runtime.db, version=version)
    key = v.report_keys.get(name)
    if key is None:
        raise ApiError(404, "not_found", f"model {version} has no {image.replace('-', ' ')}")
    png = await _stored(runtime, key, f"model {version}'s {image.replace('-', ' ')}")
    return Response(png, media_type="image/png")


@router.post(
    "/v1/models/{version}/promote",
    response_model=ModelSummary,
    dependencies=[ApiKey],
    responses=error_responses(
        401,
        403,
        _NO_VERSION,
        (409, "its ONNX file is missing from the store, altered or unusable; nothing changed"),
        422,
        503,
    ),
)
async def model_promote(
    version: Version, runtime: RuntimeDep, models: ModelsDep, request: Request
) -> dict[str, object]:
    """Make this version the production model and start serving it (API key). 409 if its
    ONNX file is missing from the store or altered: then nothing changes."""
    v = await promote(db=runtime.db, store=runtime.store, version=version)
    await models.refresh()
    return _summary(v, request)
