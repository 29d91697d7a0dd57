"""objmount: read-only FUSE mounts of S3 and OpenStack Swift containers."""

__version__ = "0.1.0"
