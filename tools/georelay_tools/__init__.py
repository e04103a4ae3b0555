"""georelay's tools: benchmarks, the drill and scale measurements (development only)."""
