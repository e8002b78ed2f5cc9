"""HTTP endpoints ops-pipeline serves itself (the paper exchange lives under adapters/brokers)."""
