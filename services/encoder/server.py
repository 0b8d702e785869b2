"""Encoder service: EncoderService (protos/lookalike/v1/encoder_service.proto).

Images are decoded once, in a thread pool (off the event loop, in parallel across cores); one bad
image fails only its own entry. Every requested extractor then gets the decoded images through its
:class:`~services.encoder.batching.MicroBatcher`, so concurrent calls share model runs (bounded queue
delay, max batch size, per-model Prometheus metrics). Models run in-process on ONNX Runtime or on a
Triton server (``LOOKALIKE_ENCODER_BACKEND=onnxruntime|triton``, ``LOOKALIKE_TRITON_URL``): the
extractors open their sessions through ``lookalike.sessions.open_session_for`` with these settings.
"""

from __future__ import annotations

import asyncio
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from lookalike.config import Settings
from lookalike.errors import FailedPrecondition, InvalidArgument, Unavailable
from lookalike.imaging import ImageError, decode_image
from lookalike.models import EXTRACTORS, Extractor, ModelSettings, UnknownExtractorError, get_extractor
from lookalike.server import ServiceSpec, rpc
from lookalike.sessions.triton import TritonUnavailableError
from lookalike.v1 import encoder_service_pb2 as pb
from lookalike.v1 import encoder_service_pb2_grpc as grpc_pb
from lookalike.v1 import types_pb2

from .batching import BatchingSettings, MicroBatcher

log = logging.getLogger(__name__)

MAX_IMAGES_PER_CALL = 256
_METRICS = {"COSINE": types_pb2.METRIC_COSINE, "IP": types_pb2.METRIC_INNER_PRODUCT, "L2": types_pb2.METRIC_L2, "HAMMING": types_pb2.METRIC_HAMMING}


def extractor_info(name: str) -> types_pb2.ExtractorInfo:
    spec = EXTRACTORS[name]
    return types_pb2.ExtractorInfo(
        name=spec.name,
        dimension=spec.dim,
        vector_type=types_pb2.VECTOR_TYPE_BINARY if spec.vector_type == "binary" else types_pb2.VECTOR_TYPE_FLOAT,
        metric=_METRICS[spec.metric],
        supports_text=bool(getattr(spec, "supports_text", False)),
        description=getattr(spec, "description", ""),
    )


def to_vector(row: np.ndarray, binary: bool) -> types_pb2.Vector:
    if binary:
        return types_pb2.Vector(binary=np.asarray(row, dtype=np.uint8).tobytes())
    return types_pb2.Vector(values=np.asarray(row, dtype=np.float32).tolist())


class EncoderServicer(grpc_pb.EncoderServiceServicer):
    def __init__(self, settings: Settings, batching: BatchingSettings | None = None) -> None:
        self.settings = settings
        self.batching = batching or BatchingSettings()
        workers = settings.encoder_threads or os.cpu_count() or 2
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode")
        # encoder_backend, triton_url and model_repository come from the service's settings
        self.model_settings = ModelSettings.coerce(settings)
        self.extractors: dict[str, Extractor] = {}
        self.batchers: dict[str, MicroBatcher] = {}

    def _extractor(self, name: str) -> Extractor:
        """The one instance per extractor (each loads its model once, lazily)."""
        if name not in self.extractors:
            try:
                self.extractors[name] = get_extractor(name, self.model_settings)
            except UnknownExtractorError as exc:
                raise InvalidArgument(str(exc)) from None
        return self.extractors[name]

    def _batcher(self, name: str) -> MicroBatcher:
        batcher = self.batchers.get(name)
        if batcher is None:
            batcher = self.batchers[name] = MicroBatcher(name, self._extractor(name).encode, self.batching)
        return batcher

    async def warm_up(self) -> None:
        """Loads every model before serving, so the first request does not pay for it."""
        loop = asyncio.get_running_loop()
        log.info("encoder backend %s%s; batching %s", self.model_settings.encoder_backend,
                 f" at {self.model_settings.triton_url}" if self.model_settings.encoder_backend == "triton" else "",
                 self.batching.model_dump())
        for name in EXTRACTORS:
            await loop.run_in_executor(self.pool, self._extractor(name).load)

    @rpc
    async def ListExtractors(self, request: pb.ListExtractorsRequest, context: Any) -> pb.ListExtractorsResponse:
        return pb.ListExtractorsResponse(extractors=[extractor_info(n) for n in sorted(EXTRACTORS)])

    def _decode(self, data: bytes) -> Any:
        try:
            return decode_image(data, max_bytes=self.settings.max_image_bytes, max_pixels=self.settings.max_image_pixels)
        except ImageError as exc:
            return exc

    async def _encode(self, name: str, images: list[Any]) -> np.ndarray:
        try:
            return await self._batcher(name).submit(images)
        except TritonUnavailableError as exc:  # the model server is down / not ready: retryable
            raise Unavailable(str(exc)) from None

    @rpc
    async def EncodeImages(self, request: pb.EncodeImagesRequest, context: Any) -> pb.EncodeImagesResponse:
        if not request.extractors:
            raise InvalidArgument("name at least one extractor")
        if len(request.images) > MAX_IMAGES_PER_CALL:
            raise InvalidArgument(f"at most {MAX_IMAGES_PER_CALL} images per call")
        extractors = {name: self._extractor(name) for name in dict.fromkeys(request.extractors)}
        loop = asyncio.get_running_loop()
        decoded = await asyncio.gather(*(loop.run_in_executor(self.pool, self._decode, data) for data in request.images))
        good = [i for i, img in enumerate(decoded) if not isinstance(img, Exception)]
        results = [pb.EncodedImage() for _ in decoded]
        for i, img in enumerate(decoded):
            if isinstance(img, Exception):
                results[i].error = str(img)
            else:
                results[i].width, results[i].height = img.size
        if good:
            images = [decoded[i] for i in good]
            names = list(extractors)
            # every extractor at once, each through its own micro-batcher
            vectors = await asyncio.gather(*(self._encode(name, images) for name in names))
            for name, rows in zip(names, vectors):
                binary = extractors[name].spec.vector_type == "binary"
                for row, i in zip(rows, good):
                    results[i].vectors[name].CopyFrom(to_vector(row, binary))
        return pb.EncodeImagesResponse(images=results)

    @rpc
    async def EncodeText(self, request: pb.EncodeTextRequest, context: Any) -> pb.EncodeTextResponse:
        extractor = self._extractor(request.extractor)
        if not getattr(extractor.spec, "supports_text", False) or not hasattr(extractor, "encode_text"):
            raise FailedPrecondition(f"extractor {request.extractor!r} has no text encoder")
        if not request.texts:
            raise InvalidArgument("no texts")
        try:
            vectors = await asyncio.get_running_loop().run_in_executor(self.pool, extractor.encode_text, list(request.texts))
        except TritonUnavailableError as exc:
            raise Unavailable(str(exc)) from None
        return pb.EncodeTextResponse(vectors=[to_vector(v, False) for v in vectors])

    async def close(self) -> None:
        await asyncio.gather(*(b.close() for b in self.batchers.values()), return_exceptions=True)
        self.pool.shutdown(wait=False, cancel_futures=True)


def build(settings: Settings, batching: BatchingSettings | None = None) -> ServiceSpec:
    servicer = EncoderServicer(settings, batching)
    return ServiceSpec(
        name="encoder",
        address=settings.encoder_addr,
        servicers=[(grpc_pb.add_EncoderServiceServicer_to_server, servicer, pb.DESCRIPTOR.services_by_name["EncoderService"].full_name)],
        on_start=[servicer.warm_up],
        on_stop=[servicer.close],
    )
