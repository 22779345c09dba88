"""The mbmt_ros training module: data, losses, loss weighting, metrics, stages, export."""
