"""KFP pipelines for odpipe; see `pipelines.training`."""
