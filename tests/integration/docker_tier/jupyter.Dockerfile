# The Docker tier's stand-in for quay.io/jupyter/pytorch-notebook (no registry here):
# the Jupyter packages notebooks/demo.ipynb runs with, from PyPI, and its user jovyan
# (uid 1000). torch and torchvision are not installed: the tests bind the test run's own
# venv read-only at /opt/host-site-packages, which the .pth file appends to sys.path
# (after the image's packages), instead of a multi-GB CUDA build or a CPU torch that
# PyPI's torchvision cannot load.
ARG BASE
FROM ${BASE}
RUN pip install --no-cache-dir "ipykernel>=6.29" "nbclient>=0.10" "nbformat>=5.10" \
        "matplotlib>=3.8" \
    && echo /opt/host-site-packages \
        > /opt/venv/lib/python3.11/site-packages/zz-host-site-packages.pth \
    && useradd --uid 1000 --create-home jovyan
USER 1000
WORKDIR /home/jovyan
# Wait for docker stop (PID 1 gets no default signal handling, hence the mask).
CMD ["python", "-c", "import signal; s = {signal.SIGTERM, signal.SIGINT}; signal.pthread_sigmask(signal.SIG_BLOCK, s); signal.sigwait(s)"]
