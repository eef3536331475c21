from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Tensor(_message.Message):
    __slots__ = ("data", "dtype", "shape", "parts")
    DATA_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    PARTS_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    dtype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    parts: int
    def __init__(self, data: _Optional[bytes] = ..., dtype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., parts: _Optional[int] = ...) -> None: ...

class Part(_message.Message):
    __slots__ = ("tensor", "data", "total")
    TENSOR_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    tensor: str
    data: bytes
    total: int
    def __init__(self, tensor: _Optional[str] = ..., data: _Optional[bytes] = ..., total: _Optional[int] = ...) -> None: ...

class NodeInfo(_message.Message):
    __slots__ = ("node", "user", "modality", "role", "pid", "host", "config_digest", "data_digest", "model_digest")
    NODE_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    MODALITY_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    CONFIG_DIGEST_FIELD_NUMBER: _ClassVar[int]
    DATA_DIGEST_FIELD_NUMBER: _ClassVar[int]
    MODEL_DIGEST_FIELD_NUMBER: _ClassVar[int]
    node: str
    user: int
    modality: str
    role: str
    pid: int
    host: str
    config_digest: str
    data_digest: str
    model_digest: str
    def __init__(self, node: _Optional[str] = ..., user: _Optional[int] = ..., modality: _Optional[str] = ..., role: _Optional[str] = ..., pid: _Optional[int] = ..., host: _Optional[str] = ..., config_digest: _Optional[str] = ..., data_digest: _Optional[str] = ..., model_digest: _Optional[str] = ...) -> None: ...

class Hop(_message.Message):
    __slots__ = ("sent_ns", "airtime_s", "queueing_s", "propagation_s")
    SENT_NS_FIELD_NUMBER: _ClassVar[int]
    AIRTIME_S_FIELD_NUMBER: _ClassVar[int]
    QUEUEING_S_FIELD_NUMBER: _ClassVar[int]
    PROPAGATION_S_FIELD_NUMBER: _ClassVar[int]
    sent_ns: int
    airtime_s: float
    queueing_s: float
    propagation_s: float
    def __init__(self, sent_ns: _Optional[int] = ..., airtime_s: _Optional[float] = ..., queueing_s: _Optional[float] = ..., propagation_s: _Optional[float] = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ("info", "protocol")
    INFO_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    info: NodeInfo
    protocol: str
    def __init__(self, info: _Optional[_Union[NodeInfo, _Mapping]] = ..., protocol: _Optional[str] = ...) -> None: ...

class Welcome(_message.Message):
    __slots__ = ("node", "run_id")
    NODE_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    node: str
    run_id: str
    def __init__(self, node: _Optional[str] = ..., run_id: _Optional[str] = ...) -> None: ...

class Task(_message.Message):
    __slots__ = ("node", "kind", "phase", "step", "sample_ids", "grad", "path", "seq", "hop")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        KIND_UNSPECIFIED: _ClassVar[Task.Kind]
        TRANSMIT: _ClassVar[Task.Kind]
        UPDATE: _ClassVar[Task.Kind]
        SAVE: _ClassVar[Task.Kind]
        STOP: _ClassVar[Task.Kind]
        LOAD: _ClassVar[Task.Kind]
    KIND_UNSPECIFIED: Task.Kind
    TRANSMIT: Task.Kind
    UPDATE: Task.Kind
    SAVE: Task.Kind
    STOP: Task.Kind
    LOAD: Task.Kind
    NODE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_IDS_FIELD_NUMBER: _ClassVar[int]
    GRAD_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    HOP_FIELD_NUMBER: _ClassVar[int]
    node: str
    kind: Task.Kind
    phase: str
    step: int
    sample_ids: _containers.RepeatedScalarFieldContainer[str]
    grad: Tensor
    path: str
    seq: int
    hop: Hop
    def __init__(self, node: _Optional[str] = ..., kind: _Optional[_Union[Task.Kind, str]] = ..., phase: _Optional[str] = ..., step: _Optional[int] = ..., sample_ids: _Optional[_Iterable[str]] = ..., grad: _Optional[_Union[Tensor, _Mapping]] = ..., path: _Optional[str] = ..., seq: _Optional[int] = ..., hop: _Optional[_Union[Hop, _Mapping]] = ...) -> None: ...

class Tasks(_message.Message):
    __slots__ = ("tasks",)
    TASKS_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedCompositeFieldContainer[Task]
    def __init__(self, tasks: _Optional[_Iterable[_Union[Task, _Mapping]]] = ...) -> None: ...

class Labels(_message.Message):
    __slots__ = ("text_ids", "text_mask", "answer_ids", "answer_mask", "answers", "qtypes")
    TEXT_IDS_FIELD_NUMBER: _ClassVar[int]
    TEXT_MASK_FIELD_NUMBER: _ClassVar[int]
    ANSWER_IDS_FIELD_NUMBER: _ClassVar[int]
    ANSWER_MASK_FIELD_NUMBER: _ClassVar[int]
    ANSWERS_FIELD_NUMBER: _ClassVar[int]
    QTYPES_FIELD_NUMBER: _ClassVar[int]
    text_ids: Tensor
    text_mask: Tensor
    answer_ids: Tensor
    answer_mask: Tensor
    answers: _containers.RepeatedScalarFieldContainer[str]
    qtypes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, text_ids: _Optional[_Union[Tensor, _Mapping]] = ..., text_mask: _Optional[_Union[Tensor, _Mapping]] = ..., answer_ids: _Optional[_Union[Tensor, _Mapping]] = ..., answer_mask: _Optional[_Union[Tensor, _Mapping]] = ..., answers: _Optional[_Iterable[str]] = ..., qtypes: _Optional[_Iterable[str]] = ...) -> None: ...

class Tokens(_message.Message):
    __slots__ = ("node", "phase", "step", "symbols", "s", "d", "labels", "compute_ms", "csi", "noise_var", "hop", "uplink_airtime_s")
    NODE_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    SYMBOLS_FIELD_NUMBER: _ClassVar[int]
    S_FIELD_NUMBER: _ClassVar[int]
    D_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_MS_FIELD_NUMBER: _ClassVar[int]
    CSI_FIELD_NUMBER: _ClassVar[int]
    NOISE_VAR_FIELD_NUMBER: _ClassVar[int]
    HOP_FIELD_NUMBER: _ClassVar[int]
    UPLINK_AIRTIME_S_FIELD_NUMBER: _ClassVar[int]
    node: str
    phase: str
    step: int
    symbols: Tensor
    s: int
    d: int
    labels: Labels
    compute_ms: float
    csi: Tensor
    noise_var: float
    hop: Hop
    uplink_airtime_s: float
    def __init__(self, node: _Optional[str] = ..., phase: _Optional[str] = ..., step: _Optional[int] = ..., symbols: _Optional[_Union[Tensor, _Mapping]] = ..., s: _Optional[int] = ..., d: _Optional[int] = ..., labels: _Optional[_Union[Labels, _Mapping]] = ..., compute_ms: _Optional[float] = ..., csi: _Optional[_Union[Tensor, _Mapping]] = ..., noise_var: _Optional[float] = ..., hop: _Optional[_Union[Hop, _Mapping]] = ..., uplink_airtime_s: _Optional[float] = ...) -> None: ...

class Done(_message.Message):
    __slots__ = ("node", "seq", "hop")
    NODE_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    HOP_FIELD_NUMBER: _ClassVar[int]
    node: str
    seq: int
    hop: Hop
    def __init__(self, node: _Optional[str] = ..., seq: _Optional[int] = ..., hop: _Optional[_Union[Hop, _Mapping]] = ...) -> None: ...

class LinkStats(_message.Message):
    __slots__ = ("link", "direction", "messages", "payload_bytes", "wire_bytes", "channel_uses", "samples", "latency_ms", "airtime_s", "queueing_s", "propagation_s", "transport_s")
    LINK_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_BYTES_FIELD_NUMBER: _ClassVar[int]
    WIRE_BYTES_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_USES_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    AIRTIME_S_FIELD_NUMBER: _ClassVar[int]
    QUEUEING_S_FIELD_NUMBER: _ClassVar[int]
    PROPAGATION_S_FIELD_NUMBER: _ClassVar[int]
    TRANSPORT_S_FIELD_NUMBER: _ClassVar[int]
    link: str
    direction: str
    messages: int
    payload_bytes: int
    wire_bytes: int
    channel_uses: int
    samples: int
    latency_ms: _containers.RepeatedScalarFieldContainer[float]
    airtime_s: float
    queueing_s: float
    propagation_s: float
    transport_s: float
    def __init__(self, link: _Optional[str] = ..., direction: _Optional[str] = ..., messages: _Optional[int] = ..., payload_bytes: _Optional[int] = ..., wire_bytes: _Optional[int] = ..., channel_uses: _Optional[int] = ..., samples: _Optional[int] = ..., latency_ms: _Optional[_Iterable[float]] = ..., airtime_s: _Optional[float] = ..., queueing_s: _Optional[float] = ..., propagation_s: _Optional[float] = ..., transport_s: _Optional[float] = ...) -> None: ...

class Report(_message.Message):
    __slots__ = ("node", "links")
    NODE_FIELD_NUMBER: _ClassVar[int]
    LINKS_FIELD_NUMBER: _ClassVar[int]
    node: str
    links: _containers.RepeatedCompositeFieldContainer[LinkStats]
    def __init__(self, node: _Optional[str] = ..., links: _Optional[_Iterable[_Union[LinkStats, _Mapping]]] = ...) -> None: ...

class Gone(_message.Message):
    __slots__ = ("node", "why")
    NODE_FIELD_NUMBER: _ClassVar[int]
    WHY_FIELD_NUMBER: _ClassVar[int]
    node: str
    why: str
    def __init__(self, node: _Optional[str] = ..., why: _Optional[str] = ...) -> None: ...

class Up(_message.Message):
    __slots__ = ("hello", "tokens", "done", "report", "gone", "part")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    REPORT_FIELD_NUMBER: _ClassVar[int]
    GONE_FIELD_NUMBER: _ClassVar[int]
    PART_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    tokens: Tokens
    done: Done
    report: Report
    gone: Gone
    part: Part
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., tokens: _Optional[_Union[Tokens, _Mapping]] = ..., done: _Optional[_Union[Done, _Mapping]] = ..., report: _Optional[_Union[Report, _Mapping]] = ..., gone: _Optional[_Union[Gone, _Mapping]] = ..., part: _Optional[_Union[Part, _Mapping]] = ...) -> None: ...

class Error(_message.Message):
    __slots__ = ("node", "code", "message")
    NODE_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    node: str
    code: str
    message: str
    def __init__(self, node: _Optional[str] = ..., code: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class Down(_message.Message):
    __slots__ = ("welcome", "tasks", "error", "part")
    WELCOME_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    PART_FIELD_NUMBER: _ClassVar[int]
    welcome: Welcome
    tasks: Tasks
    error: Error
    part: Part
    def __init__(self, welcome: _Optional[_Union[Welcome, _Mapping]] = ..., tasks: _Optional[_Union[Tasks, _Mapping]] = ..., error: _Optional[_Union[Error, _Mapping]] = ..., part: _Optional[_Union[Part, _Mapping]] = ...) -> None: ...
