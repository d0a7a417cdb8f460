"""Generated protobuf/gRPC code (built by `make proto`; do not edit)."""
