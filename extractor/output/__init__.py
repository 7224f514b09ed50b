"""Where records go: staging, hive Parquet, Delta tables, local or s3:// targets, the lock."""
