"""The comparison harness: sweeps over backbones, systems, aggregations, sizes and seeds."""
