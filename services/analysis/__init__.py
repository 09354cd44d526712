"""Results analysis: TrainLoop-format results and benchmarks (`trainloop`, `benchmark`), trends
across runs (`trends`), Parquet tables and SQL over them with DuckDB (`tables`, `query`), and
charts (`charts`). Everything reads through the query layer (services.results) or the tables."""
