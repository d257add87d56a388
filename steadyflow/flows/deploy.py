"""Schedules and deployments: an importable flow that runs a pipeline file, served or deployed.

``steadyflow serve`` and ``steadyflow deploy`` register :func:`pipeline_run` by its
module path (``steadyflow.flows.deploy.pipeline_run``), so whatever runs a
scheduled flow run (the serving process, or a worker of a work pool on another
machine) imports it from the installed package; only the pipeline file and its
documents must be reachable at the same paths there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow
from prefect.runtime import flow_run
from prefect.states import Failed
from prefect.types.entrypoint import EntrypointType

from steadyflow.flows.compiler import execute
from steadyflow.runner.run import OPERATIONAL, RunOptions
from steadyflow.spec.errors import SpecError, error_line
from steadyflow.stages.checks import load_checked


def _run_name() -> str:
    parameters = flow_run.get_parameters() or {}
    return Path(str(parameters.get("pipeline_file", "pipeline"))).stem


@flow(name="steadyflow", flow_run_name=_run_name, persist_result=False, log_prints=False)
async def pipeline_run(
    pipeline_file: str,
    input: str | None = None,
    output: str | None = None,
    overrides: list[str] | None = None,
    concurrency: int | None = None,
    no_cache: bool = False,
) -> Any:
    """Run a pipeline file once (the pipeline itself runs as a subflow named after it); returns its summary.

    A pipeline file that does not load or check (it may have changed since it was deployed) ends the flow run
    in a Failed state with its first problem, as an operational failure does: one line, no traceback.
    """
    try:
        pipeline = load_checked(pipeline_file, overrides or [])
    except SpecError as exc:
        more = f" (+{len(exc.problems) - 1} more problems)" if len(exc.problems) > 1 else ""
        return Failed(message=error_line(exc) + more)
    options = RunOptions(
        input=input, output=output, concurrency=concurrency, no_cache=no_cache, overrides=overrides or []
    )
    try:
        summary = await execute(pipeline, options)
    except (*OPERATIONAL, SpecError) as exc:  # one line in the flow run's state, not a traceback in the worker's log
        return Failed(message=error_line(exc))
    result: dict[str, Any] = summary.as_json()
    return result


def cron_is_valid(cron: str) -> bool:
    """Whether Prefect accepts ``cron`` as a schedule (five fields: minute hour day month weekday)."""
    from prefect.client.schemas.schedules import CronSchedule

    try:
        CronSchedule(cron=cron)
    except ValueError:
        return False
    return True


def run_parameters(file: Path, input: str | None, output: str | None, overrides: list[str]) -> dict[str, Any]:
    """Parameters of a deployment: absolute paths, so a worker in another folder finds the same files."""
    return {
        "pipeline_file": str(file.resolve()),
        "input": str(Path(input).resolve()) if input and "*" not in input else input,
        "output": str(Path(output).resolve()) if output else None,
        "overrides": overrides,
    }


def serve(name: str, parameters: dict[str, Any], cron: str | None, interval_s: float | None) -> None:
    """Serve the pipeline in this process: run it on schedule (and on demand from the UI) until stopped."""
    pipeline_run.serve(
        name=name,
        cron=cron,
        interval=interval_s,
        parameters=parameters,
        entrypoint_type=EntrypointType.MODULE_PATH,
        pause_on_shutdown=False,
    )


def deploy(name: str, parameters: dict[str, Any], pool: str, cron: str | None, interval_s: float | None) -> str:
    """Create or update a deployment of the pipeline for a work pool (created as a process pool if missing)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound
    from prefect.workers.process import ProcessWorker

    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(pool)
        except ObjectNotFound:
            template = ProcessWorker.get_default_base_job_template()
            client.create_work_pool(WorkPoolCreate(name=pool, type="process", base_job_template=template))
    deployment_id = pipeline_run.deploy(
        name=name,
        work_pool_name=pool,
        build=False,
        push=False,
        cron=cron,
        interval=interval_s,
        parameters=parameters,
        entrypoint_type=EntrypointType.MODULE_PATH,
        print_next_steps=False,
    )
    return str(deployment_id)
