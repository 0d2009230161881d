"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from sleeve_common.exceptions import DatabaseUnavailable, StoreError
from sleeve_inference.deps import ModelsDep, RuntimeDep

__all__ = ["router"]

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    responses={
        503: {
            "description": "not ready; the body says what is missing. Before the first model "
            "is registered, `first_model` says how its training goes (`state`, `step` of "
            "`steps`, `stage`, `percent`, `eta_seconds`) or why it failed and the `fix`",
            "content": {
                "application/json": {
                    "example": {
                        "status": "not ready",
                        "checks": {
                            "database": "ok",
                            "store": "ok",
                            "model": "training the first model: step 3 of 4, training the "
                            "model, 62% done, about 1 min left",
                        },
                        "provider": None,
                        "first_model": {
                            "state": "running",
                            "step": 3,
                            "steps": 4,
                            "stage": "training the model",
                            "percent": 62,
                            "eta_seconds": 55,
                            "detail": "training run 1: head epoch 4/10: val accuracy 0.412",
                        },
                    }
                }
            },
        }
    },
)
async def readyz(runtime: RuntimeDep, models: ModelsDep) -> JSONResponse:
    """Ready when a model is loaded and the database and store answer."""
    checks: dict[str, str] = {}
    try:
        await runtime.db.ping()
        await runtime.db.check_schema()
        checks["database"] = "ok"
    except DatabaseUnavailable as exc:
        checks["database"] = str(exc)
    try:
        await runtime.store.ping()
        checks["store"] = "ok"
    except StoreError as exc:  # down, refusing (keys, bucket) or otherwise unusable
        checks["store"] = str(exc)
    model = await models.get()
    checks["model"] = f"ok ({model.version})" if model else (models.last_error or "not loaded")
    ready = all(value.startswith("ok") for value in checks.values())
    return JSONResponse(
        status_code=200 if ready else 503,
        content={
            "status": "ready" if ready else "not ready",
            "checks": checks,
            "provider": model.provider if model else None,
            "first_model": None
            if model or not models.first_model
            else models.first_model.as_dict(),
        },
    )


@router.get("/metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    """Prometheus text format."""
    return Response(
        generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST
    )
