"""The model registry over HTTP."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from sleeve_common.models import ModelVersion
from sleeve_common.registry import get_model_version, list_model_versions, promote
from sleeve_inference.deps import ApiKey, ModelsDep, RuntimeDep
from sleeve_inference.errors import ApiError
from sleeve_inference.schemas import ModelDetail, ModelSummary

__all__ = ["router"]

router = APIRouter(tags=["models"])

_IMAGES = {"confusion-matrix.png": "confusion_matrix", "training-curves.png": "training_curves"}


def _summary(v: ModelVersion) -> dict[str, object]:
    return {
        "version": v.version,
        "stage": v.stage,
        "labels": v.labels,
        "accuracy": v.metrics.get("accuracy"),
        "macro_f1": v.metrics.get("macro_f1"),
        "created_at": v.created_at,
    }


@router.get("/v1/models", response_model=list[ModelSummary])
async def models_list(runtime: RuntimeDep) -> list[dict[str, object]]:
    """Every registered model version, newest first."""
    return [_summary(v) for v in await list_model_versions(db=runtime.db)]


@router.get("/v1/models/{version}", response_model=ModelDetail)
async def model_detail(version: str, runtime: RuntimeDep, request: Request) -> dict[str, object]:
    """Labels, metrics, input spec and report images of one version."""
    v = await get_model_version(db=runtime.db, version=version)
    urls = {
        field: str(request.url_for("model_image", version=v.version, image=name))
        if field in v.report_keys
        else None
        for name, field in _IMAGES.items()
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


@router.get(
    "/v1/models/{version}/{image}",
    name="model_image",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}},
)
async def model_image(version: str, image: str, runtime: RuntimeDep) -> Response:
    """A report image: ``confusion-matrix.png`` or ``training-curves.png``."""
    if image not in _IMAGES:
        raise ApiError(404, "not_found", f"no image {image!r}; have {sorted(_IMAGES)}")
    v = await get_model_version(db=runtime.db, version=version)
    key = v.report_keys.get(_IMAGES[image])
    if key is None:
        raise ApiError(404, "not_found", f"model {version} has no {image}")
    return Response(await runtime.store.get(key), media_type="image/png")


@router.post("/v1/models/{version}/promote", response_model=ModelSummary, dependencies=[ApiKey])
async def model_promote(version: str, runtime: RuntimeDep, models: ModelsDep) -> dict[str, object]:
    """Make this version the production model and start serving it (API key). 409 if its
    ONNX file is missing from the store or altered: then nothing changes."""
    v = await promote(db=runtime.db, store=runtime.store, version=version)
    await models.refresh()
    return _summary(v)
