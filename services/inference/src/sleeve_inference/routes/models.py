"""The model registry over HTTP."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response

from sleeve_common.models import ModelVersion
from sleeve_common.registry import get_model_version, list_model_versions, promote
from sleeve_inference.deps import ApiKey, ModelsDep, RuntimeDep
from sleeve_inference.errors import ApiError, error_responses
from sleeve_inference.schemas import VERSION_PATTERN, ModelDetail, ModelSummary

__all__ = ["router"]

router = APIRouter(tags=["models"])

# Report images by their key in ``report_keys``; each has a route of its own (a path segment
# of any name would also catch `/v1/models/{version}/promote`).
_IMAGES = ("confusion_matrix", "training_curves")

Version = Annotated[
    str,
    Path(
        description="a registered version, such as `v1`", examples=["v1"], pattern=VERSION_PATTERN
    ),
]


def _summary(v: ModelVersion) -> dict[str, object]:
    return {
        "version": v.version,
        "stage": v.stage,
        "labels": v.labels,
        "accuracy": v.metrics.get("accuracy"),
        "macro_f1": v.metrics.get("macro_f1"),
        "created_at": v.created_at,
    }


_NO_VERSION = (404, "no such model version")


@router.get("/v1/models", response_model=list[ModelSummary], responses=error_responses(503))
async def models_list(runtime: RuntimeDep) -> list[dict[str, object]]:
    """Every registered model version, newest first."""
    return [_summary(v) for v in await list_model_versions(db=runtime.db)]


@router.get(
    "/v1/models/{version}",
    response_model=ModelDetail,
    responses=error_responses(_NO_VERSION, 422, 503),
)
async def model_detail(
    version: Version, runtime: RuntimeDep, request: Request
) -> dict[str, object]:
    """Labels, metrics, input spec and report images of one version."""
    v = await get_model_version(db=runtime.db, version=version)
    urls = {
        field: str(request.url_for(f"model_{field}", version=v.version))
        if field in v.report_keys
        else None
        for field in _IMAGES
    }
    return {
        **_summary(v),
        "metrics": v.metrics,
        "input_spec": v.input_spec,
        "onnx_sha256": v.onnx_sha256,
        "onnx_bytes": v.onnx_bytes,
        "confusion_matrix_url": urls["confusion_matrix"],
        "training_curves_url": urls["training_curves"],
    }


_IMAGE_ROUTE: dict[str, Any] = {
    "response_class": Response,
    "responses": {
        200: {"content": {"image/png": {}}},
        **error_responses((404, "no such model version, or it has no such image"), 422, 503),
    },
}


@router.get(
    "/v1/models/{version}/confusion-matrix.png", name="model_confusion_matrix", **_IMAGE_ROUTE
)
async def model_confusion_matrix(version: Version, runtime: RuntimeDep) -> Response:
    """The version's confusion matrix on its test split (PNG)."""
    return await _report_image(runtime, version, "confusion_matrix")


@router.get(
    "/v1/models/{version}/training-curves.png", name="model_training_curves", **_IMAGE_ROUTE
)
async def model_training_curves(version: Version, runtime: RuntimeDep) -> Response:
    """The version's loss and accuracy per epoch (PNG)."""
    return await _report_image(runtime, version, "training_curves")


async def _report_image(runtime: RuntimeDep, version: str, field: str) -> Response:
    v = await get_model_version(db=runtime.db, version=version)
    key = v.report_keys.get(field)
    if key is None:
        raise ApiError(404, "not_found", f"model {version} has no {field.replace('_', ' ')}")
    return Response(await runtime.store.get(key), media_type="image/png")


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
    version: Version, runtime: RuntimeDep, models: ModelsDep
) -> dict[str, object]:
    """Make this version the production model and start serving it (API key). 409 if its
    ONNX file is missing from the store or altered: then nothing changes."""
    v = await promote(db=runtime.db, store=runtime.store, version=version)
    await models.refresh()
    return _summary(v)
