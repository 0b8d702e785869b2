"""Encoder service: EncoderService (protos/lookalike/v1/encoder_service.proto).

Images are decoded once (in worker threads, off the event loop) and every requested extractor runs
on the decoded batch; one bad image fails only its own entry.
"""

from __future__ import annotations

import asyncio
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from lookalike.config import Settings
from lookalike.errors import FailedPrecondition, InvalidArgument
from lookalike.imaging import ImageError, decode_image
from lookalike.models import EXTRACTORS, Extractor, ModelSettings, UnknownExtractorError, get_extractor
from lookalike.server import ServiceSpec, rpc
from lookalike.v1 import encoder_service_pb2 as pb
from lookalike.v1 import encoder_service_pb2_grpc as grpc_pb
from lookalike.v1 import types_pb2

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
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        workers = settings.encoder_threads or os.cpu_count() or 2
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="encode")
        self.model_settings = ModelSettings()
        self.extractors: dict[str, Extractor] = {}

    def _extractor(self, name: str) -> Extractor:
        """The one instance per extractor (each loads its model once, lazily)."""
        if name not in self.extractors:
            try:
                self.extractors[name] = get_extractor(name, self.model_settings)
            except UnknownExtractorError as exc:
                raise InvalidArgument(str(exc)) from None
        return self.extractors[name]

    async def warm_up(self) -> None:
        """Loads every model before serving, so the first request does not pay for it."""
        loop = asyncio.get_running_loop()
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
            for name, extractor in extractors.items():
                binary = EXTRACTORS[name].vector_type == "binary"
                vectors = await loop.run_in_executor(self.pool, extractor.encode, images)
                for row, i in zip(vectors, good):
                    results[i].vectors[name].CopyFrom(to_vector(row, binary))
        return pb.EncodeImagesResponse(images=results)

    @rpc
    async def EncodeText(self, request: pb.EncodeTextRequest, context: Any) -> pb.EncodeTextResponse:
        extractor = self._extractor(request.extractor)
        if not getattr(EXTRACTORS[request.extractor], "supports_text", False) or not hasattr(extractor, "encode_text"):
            raise FailedPrecondition(f"extractor {request.extractor!r} has no text encoder")
        if not request.texts:
            raise InvalidArgument("no texts")
        vectors = await asyncio.get_running_loop().run_in_executor(self.pool, extractor.encode_text, list(request.texts))
        return pb.EncodeTextResponse(vectors=[to_vector(v, False) for v in vectors])

    async def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


def build(settings: Settings) -> ServiceSpec:
    servicer = EncoderServicer(settings)
    return ServiceSpec(
        name="encoder",
        address=settings.encoder_addr,
        servicers=[(grpc_pb.add_EncoderServiceServicer_to_server, servicer, pb.DESCRIPTOR.services_by_name["EncoderService"].full_name)],
        on_start=[servicer.warm_up],
        on_stop=[servicer.close],
    )
