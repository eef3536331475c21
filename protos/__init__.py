"""The wire: the tokcom.v2 streaming protocol and its generated stubs, the codec (the only place
where protobuf messages and tensors meet), the wire precisions, the gRPC shell every role
shares (`rpc`) and per-link metering."""
