"""Real backend servers (OpenStack Swift + Keystone) started by the test suite."""
