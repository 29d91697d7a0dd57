"""`python -m bench.etl`: the ETL load benchmark, objmount etl load against rclone copy."""
