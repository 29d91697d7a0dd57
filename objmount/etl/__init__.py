"""`objmount etl`: get a dataset into a container (download, reshape, parallel resumable upload).

extract.py downloads and unpacks an archive into a staging directory, transform.py
reshapes it with a layout (food11.py is the example), load.py uploads the tree and
manifest.py records what the container holds; pipeline.py reads the file that
chains the three stages, cli.py is their command line.
"""
