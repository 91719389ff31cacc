"""Step Functions activities for moto's server, on moto's own execution engine.

moto (pinned in setup.cfg) runs state machines with its vendored engine
(``moto.stepfunctions.parser``) when ``execute_state_machine`` is on, and
that engine has activity tasks, but the server does not connect them:
executions get an empty activity store, GetActivityTask is not served, an
unnamed execution is named ``None``, SendTaskFailure drops the ``cause``, and
a heartbeat for a closed task answers InvalidToken instead of TaskTimedOut.
:func:`install` connects those pieces. It checks the moto version first, so
an upgrade that could break it fails loudly instead of misbehaving.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import moto
from moto.core.common_models import CloudFormationModel
from moto.core.config import default_user_config
from moto.core.responses import ActionResult, EmptyResult
from moto.stepfunctions import responses as sfn_responses
from moto.stepfunctions.parser import models as parser_models
from moto.stepfunctions.parser.api import ActivityDoesNotExist, InvalidToken, TaskTimedOut
from moto.stepfunctions.parser.asl.component.state.exec.state_task import state_task_activitiy
from moto.stepfunctions.parser.asl.eval.callback.callback import (
    ActivityCallbackEndpoint,
    CallbackConsumerTimeout,
    CallbackNotifyConsumerError,
    CallbackPoolManager,
)
from moto.stepfunctions.parser.backend.activity import Activity, ActivityTask
from moto.stepfunctions.parser.backend.execution import Execution

SUPPORTED_MOTO = "5.2.5"
LONG_POLL_S = 60.0
_installed = False
_install_lock = threading.Lock()


class LongPollActivity(Activity):
    """An activity whose queue wakes a waiting GetActivityTask at once."""

    def __init__(self, arn: str, name: str) -> None:
        super().__init__(arn=arn, name=name)
        self._cond = threading.Condition()

    def add_task(self, task: ActivityTask) -> None:
        with self._cond:
            self._tasks.append(task)
            self._cond.notify()

    def wait_task(self, timeout_s: float) -> ActivityTask | None:
        """The oldest task, waiting up to ``timeout_s`` for one."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while not self._tasks:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)
            return self._tasks.popleft()


def activity_store(backend: Any) -> dict[str, LongPollActivity]:
    """The activities of one account and region, shared by all their executions."""
    store = getattr(backend, "_gateway_activity_store", None)
    if store is None:
        store = {}
        backend._gateway_activity_store = store
    return store


def _backend(account_id: str, region: str) -> Any:
    return parser_models.stepfunctions_parser_backends[account_id][region]


class _Execution(Execution):
    """An execution that sees its backend's activities instead of an empty store."""

    def __init__(self, *, account_id: str, region_name: str, **kwargs: Any) -> None:
        kwargs["activity_store"] = activity_store(_backend(account_id, region_name))
        super().__init__(account_id=account_id, region_name=region_name, **kwargs)


_TOKEN_EXECUTIONS: dict[str, Any] = {}
"""Which execution a task token belongs to, once found: a search looks only at running executions."""


def _endpoint_of(execution: Any, token: str) -> Any:
    worker = getattr(execution, "exec_worker", None)
    return None if worker is None else worker.env.callback_pool_manager.get(token)


def _find_endpoint(backend: Any, token: str) -> tuple[Any, Any] | None:
    known = _TOKEN_EXECUTIONS.get(token)
    if known is not None:
        endpoint = _endpoint_of(known, token)
        return (known, endpoint) if endpoint is not None else None
    # Thousands of finished executions pile up in a long run: look among the running ones first.
    running = backend._get_executions("RUNNING")
    seen = {id(e) for e in running}
    for executions in (running, [e for e in backend._get_executions() if id(e) not in seen]):
        for execution in executions:
            endpoint = _endpoint_of(execution, token)
            if endpoint is not None:
                _TOKEN_EXECUTIONS[token] = execution
                return execution, endpoint
    return None


def _running(execution: Any) -> bool:
    # The status changes only when the worker thread ends; the environment knows at once.
    return bool(execution.status == "RUNNING" and execution.exec_worker.env.is_running())


def _closed() -> TaskTimedOut:
    return TaskTimedOut("Task Timed Out: the task has already been closed", "TaskTimedOut", 400)


def _check_open(backend: Any, token: str) -> Any:
    found = _find_endpoint(backend, token)
    if found is None:
        raise InvalidToken()  # type: ignore[no-untyped-call]
    execution, endpoint = found
    if endpoint.consumer_error is not None or not _running(execution):
        raise _closed()
    return endpoint


def _send_task_heartbeat(self: Any, task_token: str) -> None:
    # False when the state has no HeartbeatSeconds, or has not armed its timer yet
    # (just after GetActivityTask): AWS accepts the heartbeat in both cases.
    _check_open(self, task_token).notify_heartbeat()


ANSWERS: dict[str, list[str]] = {}
"""Every SendTaskSuccess/SendTaskFailure received, per task token, accepted or not: what tests count."""
_answers_lock = threading.Lock()


def _record(token: str, action: str) -> None:
    with _answers_lock:
        ANSWERS.setdefault(token, []).append(action)


def _wrap_notify(original: Any) -> Any:
    def notify(self: Any, task_token: str, *args: Any, **kwargs: Any) -> Any:
        _record(task_token, original.__name__)
        _check_open(self, task_token)
        try:
            return original(self, task_token, *args, **kwargs)
        except CallbackNotifyConsumerError as exc:
            raise _closed() from exc

    return notify


def _create_activity(original: Any) -> Any:
    def create(self: Any, name: str, *args: Any, **kwargs: Any) -> Any:
        activity = original(self, name, *args, **kwargs)
        store = activity_store(self)
        if activity.arn not in store:
            store[activity.arn] = LongPollActivity(arn=activity.arn, name=name)
        return activity

    return create


def _delete_activity(original: Any) -> Any:
    def delete(self: Any, activity_arn: str) -> None:
        original(self, activity_arn)
        activity_store(self).pop(activity_arn, None)

    return delete


def _start_execution(original: Any) -> Any:
    def start(self: Any, state_machine_arn: str, name: str | None = None, *args: Any, **kwargs: Any) -> Any:
        return original(self, state_machine_arn, name or str(uuid.uuid4()), *args, **kwargs)

    return start


def _close_activity_endpoint(original: Any) -> Any:
    """Once an activity state ends, its token answers TaskTimedOut, as in AWS."""

    def evaluate(self: Any, env: Any) -> None:
        try:
            original(self, env)
        finally:
            token = env.states.context_object.context_object_data.get("Task", {}).get("Token")
            endpoint = env.callback_pool_manager.get(token) if token else None
            if endpoint is not None and endpoint.consumer_error is None:
                endpoint.report(CallbackConsumerTimeout())

    return evaluate


class CloudFormationActivity(CloudFormationModel):
    """``AWS::StepFunctions::Activity`` in stacks, so ``!GitcResource`` resolves locally too."""

    def __init__(self, arn: str) -> None:
        self.arn = arn

    @staticmethod
    def cloudformation_name_type() -> str:
        return "Name"

    @staticmethod
    def cloudformation_type() -> str:
        return "AWS::StepFunctions::Activity"

    @property
    def physical_resource_id(self) -> str:
        return self.arn

    @classmethod
    def create_from_cloudformation_json(
        cls, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str, **kwargs: Any
    ) -> CloudFormationActivity:
        name = cloudformation_json.get("Properties", {}).get("Name", resource_name)
        backend = sfn_responses.get_backend(account_id, region_name)
        return cls(backend.create_activity(name=name).arn)


def _add_activity_task(self: Any, callback_id: str, activity_arn: str, activity_input: str) -> Any:
    """CallbackPoolManager.add_activity_task with the task's endpoint registered before the task is queued.

    moto queues the task first: a GetActivityTask already waiting could take
    it, find no endpoint for its token, and drop it, leaving the execution
    waiting for a task no worker would ever get.
    """
    if callback_id in self._pool:
        raise ValueError("Duplicate callback token id value.")
    activity = self._activity_store.get(activity_arn)
    if activity is None:
        raise ActivityDoesNotExist(f"Activity does not exist: {activity_arn}")
    endpoint = ActivityCallbackEndpoint(callback_id=callback_id, activity_input=activity_input)
    self._pool[callback_id] = endpoint
    activity.add_task(ActivityTask(task_token=callback_id, task_input=activity_input))
    return endpoint


def _get_activity_task(self: Any) -> ActionResult:
    arn = self._get_param("activityArn")
    worker_name = self._get_param("workerName")
    backend = self.stepfunction_backend
    backend.describe_activity(arn)  # ActivityDoesNotExist for unknown ARNs
    activity = activity_store(backend).get(arn)
    deadline = time.monotonic() + LONG_POLL_S
    while activity is not None and (left := deadline - time.monotonic()) > 0:
        task = activity.wait_task(left)
        if task is None:
            break
        found = _find_endpoint(backend, task.task_token)
        if found is None or not _running(found[0]):
            continue  # its execution ended while the task waited: AWS would not deliver it
        endpoint = found[1]
        if isinstance(endpoint, ActivityCallbackEndpoint):
            endpoint.notify_activity_task_start(worker_name=worker_name)
        return ActionResult({"taskToken": task.task_token, "input": task.task_input})
    return ActionResult({})


def _send_task_failure(self: Any) -> ActionResult:
    self.stepfunction_backend.send_task_failure(
        self._get_param("taskToken"), error=self._get_param("error"), cause=self._get_param("cause")
    )
    return EmptyResult()


def install(long_poll_s: float = LONG_POLL_S) -> None:
    """Connect activities in this process's moto; idempotent."""
    global _installed, LONG_POLL_S
    LONG_POLL_S = long_poll_s
    with _install_lock:
        if _installed:
            return
        if moto.__version__ != SUPPORTED_MOTO:
            raise RuntimeError(
                f"provider_gateway.local.moto_activities supports moto {SUPPORTED_MOTO}, "
                f"found {moto.__version__}: re-check the extension against the new version"
            )
        default_user_config.setdefault("stepfunctions", {})["execute_state_machine"] = True
        backend = parser_models.StepFunctionsParserBackend
        patches: list[tuple[Any, str, Any]] = [
            (parser_models, "Execution", _Execution),
            (backend, "create_activity", _create_activity(backend.create_activity)),
            (backend, "delete_activity", _delete_activity(backend.delete_activity)),
            (backend, "start_execution", _start_execution(backend.start_execution)),
            (backend, "send_task_heartbeat", _send_task_heartbeat),
            (backend, "send_task_success", _wrap_notify(backend.send_task_success)),
            (backend, "send_task_failure", _wrap_notify(backend.send_task_failure)),
            (
                state_task_activitiy.StateTaskActivity,
                "_eval_execution",
                _close_activity_endpoint(state_task_activitiy.StateTaskActivity._eval_execution),
            ),
            (CallbackPoolManager, "add_activity_task", _add_activity_task),
            (sfn_responses.StepFunctionResponse, "get_activity_task", _get_activity_task),
            (sfn_responses.StepFunctionResponse, "send_task_failure", _send_task_failure),
        ]
        for target, name, value in patches:
            setattr(target, name, value)
        _installed = True
