"""The namespace: the whole metadata path of a mount, FUSE-free.

tree.py turns object listings into inodes, listed lazily per directory;
listahead.py lists the subdirectories of a directory in use in the background;
names.py says which key segments can be file names. Nothing here imports
pyfuse3: fs.py is the only FUSE face of it.
"""
