"""What a server boots with: layered configuration, per-environment secrets, cloud-init user-data."""
