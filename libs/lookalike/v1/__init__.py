"""Generated from protos/lookalike/v1 by `make proto`; do not edit."""
