# GPU worker: CUDA runtime, NCCL and a CUDA build of libtorch. Debian's
# libtorch is CPU-only, so this image builds against the libtorch that ships
# inside the PyTorch wheel (it carries CMake files: Torch_DIR below). The
# coordinator image is the CPU one (deploy/docker/Dockerfile).
#   docker build -f deploy/docker/worker-gpu.Dockerfile -t attune-worker-gpu:0.1.0 .
# Status: the CUDA build and NCCL communicator are written; see docs/benchmarks.md for
# what has and has not been run on GPUs.

ARG CUDA_IMAGE=nvidia/cuda:13.0.0-cudnn-devel-ubuntu24.04
FROM ${CUDA_IMAGE} AS build
ARG TORCH_DIR=/opt/libtorch/share/cmake/Torch
WORKDIR /src
COPY . .
# gRPC, protobuf, Abseil, prometheus-cpp, SQLite, ICU, yaml-cpp, glog, GTest from apt;
# libtorch (CUDA) unpacked at /opt/libtorch by the CI that builds this image.
RUN bash scripts/install-deps.sh --build-only --no-torch \
    && cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DTorch_DIR=${TORCH_DIR} -DATTUNE_CUDA=ON \
    && cmake --build build --target attune-worker attune

FROM nvidia/cuda:13.0.0-cudnn-runtime-ubuntu24.04 AS worker
COPY --from=build /opt/libtorch/lib /opt/libtorch/lib
COPY --from=build /src/build/bin/attune-worker /src/build/bin/attune /usr/local/bin/
COPY scripts/install-deps.sh /tmp/install-deps.sh
RUN bash /tmp/install-deps.sh --runtime-only --no-torch && rm /tmp/install-deps.sh \
    && useradd --uid 10001 --user-group --no-create-home --home-dir /nonexistent attune
ENV LD_LIBRARY_PATH=/opt/libtorch/lib OMP_WAIT_POLICY=PASSIVE
USER 10001
EXPOSE 29500 9465
ENTRYPOINT ["attune-worker"]
