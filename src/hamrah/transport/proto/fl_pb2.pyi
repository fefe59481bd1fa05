from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TaskKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_KIND_UNSPECIFIED: _ClassVar[TaskKind]
    TRAIN: _ClassVar[TaskKind]
    EVALUATE: _ClassVar[TaskKind]

class ReportStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REPORT_STATUS_UNSPECIFIED: _ClassVar[ReportStatus]
    COMPLETED: _ClassVar[ReportStatus]
    ABORTED: _ClassVar[ReportStatus]
    FAILED: _ClassVar[ReportStatus]

class SecAggStage(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SECAGG_STAGE_UNSPECIFIED: _ClassVar[SecAggStage]
    JOIN: _ClassVar[SecAggStage]
    ADVERTISE_KEYS: _ClassVar[SecAggStage]
    SHARE_KEYS: _ClassVar[SecAggStage]
    MASKED_INPUT: _ClassVar[SecAggStage]
    UNMASKING: _ClassVar[SecAggStage]
    CONSISTENCY_CHECK: _ClassVar[SecAggStage]
TASK_KIND_UNSPECIFIED: TaskKind
TRAIN: TaskKind
EVALUATE: TaskKind
REPORT_STATUS_UNSPECIFIED: ReportStatus
COMPLETED: ReportStatus
ABORTED: ReportStatus
FAILED: ReportStatus
SECAGG_STAGE_UNSPECIFIED: SecAggStage
JOIN: SecAggStage
ADVERTISE_KEYS: SecAggStage
SHARE_KEYS: SecAggStage
MASKED_INPUT: SecAggStage
UNMASKING: SecAggStage
CONSISTENCY_CHECK: SecAggStage

class DeviceState(_message.Message):
    __slots__ = ("idle", "charging", "unmetered", "battery")
    IDLE_FIELD_NUMBER: _ClassVar[int]
    CHARGING_FIELD_NUMBER: _ClassVar[int]
    UNMETERED_FIELD_NUMBER: _ClassVar[int]
    BATTERY_FIELD_NUMBER: _ClassVar[int]
    idle: bool
    charging: bool
    unmetered: bool
    battery: float
    def __init__(self, idle: _Optional[bool] = ..., charging: _Optional[bool] = ..., unmetered: _Optional[bool] = ..., battery: _Optional[float] = ...) -> None: ...

class CheckInRequest(_message.Message):
    __slots__ = ("population", "runtime_version", "device_id", "state", "num_examples", "session")
    POPULATION_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_VERSION_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    NUM_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    population: str
    runtime_version: str
    device_id: str
    state: DeviceState
    num_examples: int
    session: str
    def __init__(self, population: _Optional[str] = ..., runtime_version: _Optional[str] = ..., device_id: _Optional[str] = ..., state: _Optional[_Union[DeviceState, _Mapping]] = ..., num_examples: _Optional[int] = ..., session: _Optional[str] = ...) -> None: ...

class Task(_message.Message):
    __slots__ = ("task_id", "round", "kind", "plan", "checkpoint_bytes", "checkpoint_sha256", "report_deadline_s")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    PLAN_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_BYTES_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_SHA256_FIELD_NUMBER: _ClassVar[int]
    REPORT_DEADLINE_S_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    round: int
    kind: TaskKind
    plan: bytes
    checkpoint_bytes: int
    checkpoint_sha256: str
    report_deadline_s: float
    def __init__(self, task_id: _Optional[str] = ..., round: _Optional[int] = ..., kind: _Optional[_Union[TaskKind, str]] = ..., plan: _Optional[bytes] = ..., checkpoint_bytes: _Optional[int] = ..., checkpoint_sha256: _Optional[str] = ..., report_deadline_s: _Optional[float] = ...) -> None: ...

class CheckInResponse(_message.Message):
    __slots__ = ("task", "reconnect_after_s", "message", "finished", "mode")
    TASK_FIELD_NUMBER: _ClassVar[int]
    RECONNECT_AFTER_S_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    task: Task
    reconnect_after_s: float
    message: str
    finished: bool
    mode: str
    def __init__(self, task: _Optional[_Union[Task, _Mapping]] = ..., reconnect_after_s: _Optional[float] = ..., message: _Optional[str] = ..., finished: _Optional[bool] = ..., mode: _Optional[str] = ...) -> None: ...

class CheckpointRequest(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    def __init__(self, task_id: _Optional[str] = ...) -> None: ...

class Chunk(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class ReportHeader(_message.Message):
    __slots__ = ("task_id", "round", "status", "num_examples", "metrics", "update_bytes", "reason", "task_metrics")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    NUM_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    UPDATE_BYTES_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    TASK_METRICS_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    round: int
    status: ReportStatus
    num_examples: int
    metrics: bytes
    update_bytes: int
    reason: str
    task_metrics: bytes
    def __init__(self, task_id: _Optional[str] = ..., round: _Optional[int] = ..., status: _Optional[_Union[ReportStatus, str]] = ..., num_examples: _Optional[int] = ..., metrics: _Optional[bytes] = ..., update_bytes: _Optional[int] = ..., reason: _Optional[str] = ..., task_metrics: _Optional[bytes] = ...) -> None: ...

class ReportPart(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: ReportHeader
    chunk: Chunk
    def __init__(self, header: _Optional[_Union[ReportHeader, _Mapping]] = ..., chunk: _Optional[_Union[Chunk, _Mapping]] = ...) -> None: ...

class ReportResponse(_message.Message):
    __slots__ = ("accepted", "message", "reconnect_after_s")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RECONNECT_AFTER_S_FIELD_NUMBER: _ClassVar[int]
    accepted: bool
    message: str
    reconnect_after_s: float
    def __init__(self, accepted: _Optional[bool] = ..., message: _Optional[str] = ..., reconnect_after_s: _Optional[float] = ...) -> None: ...

class SecAggHeader(_message.Message):
    __slots__ = ("task_id", "round", "stage", "message_bytes", "num_examples", "metrics", "client_index", "num_clients", "weight_scale", "reconnect_after_s")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    NUM_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    CLIENT_INDEX_FIELD_NUMBER: _ClassVar[int]
    NUM_CLIENTS_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_SCALE_FIELD_NUMBER: _ClassVar[int]
    RECONNECT_AFTER_S_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    round: int
    stage: SecAggStage
    message_bytes: int
    num_examples: int
    metrics: bytes
    client_index: int
    num_clients: int
    weight_scale: float
    reconnect_after_s: float
    def __init__(self, task_id: _Optional[str] = ..., round: _Optional[int] = ..., stage: _Optional[_Union[SecAggStage, str]] = ..., message_bytes: _Optional[int] = ..., num_examples: _Optional[int] = ..., metrics: _Optional[bytes] = ..., client_index: _Optional[int] = ..., num_clients: _Optional[int] = ..., weight_scale: _Optional[float] = ..., reconnect_after_s: _Optional[float] = ...) -> None: ...

class SecAggPart(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: SecAggHeader
    chunk: Chunk
    def __init__(self, header: _Optional[_Union[SecAggHeader, _Mapping]] = ..., chunk: _Optional[_Union[Chunk, _Mapping]] = ...) -> None: ...
