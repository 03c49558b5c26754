"""SRM's benchmark (not a test): `bench/run` measures every performance target in one run."""
