"""The wire: the tokcom.v1 protocol, its generated stubs, the codec (the only place
where protobuf messages and tensors meet) and per-link metering."""
