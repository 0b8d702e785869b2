"""The web page (services/web) on the real mesh, in a real headless browser.

The stack starts the web app next to the gateway (lookalike.stack, service `web`); these tests index
real photos through the gateway, then drive Debian's chromium with Playwright: drop / pick / paste /
URL / text queries, the result grid with its rerank boxes, plain error messages, the upload panel
and the duplicates view. Screenshots land in test-artifacts/web/ (and docs/web.png, the README's,
when it is missing or LOOKALIKE_UPDATE_DOCS_SCREENSHOT=1).

The browser is not optional: when chromium or Playwright is missing the `browser` fixture runs
`make browser-deps` (apt-get + pip) and fails, never skips, if that does not bring them.
"""

from __future__ import annotations

import base64
import functools
import http.server
import importlib
import io
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import httpx
import pytest
from PIL import Image, ImageOps

from lookalike.cli import Gateway
from lookalike.devservers import free_port
from lookalike.stack import Stack, http_health_check
from lookalike.v1 import (
    bucket_service_pb2 as bucket_pb,
    collection_service_pb2 as collection_pb,
    namespace_service_pb2 as namespace_pb,
    retriever_service_pb2 as retriever_pb,
)
from services.web.gateway import HTTP_STATUS, http_status
from tests.fixtures_mesh import jpeg_bytes
from tests.test_e2e import struct, wait_job

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

REPO_ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO_ROOT / "test-artifacts" / "web"
DOCS_SCREENSHOT = REPO_ROOT / "docs" / "web.png"
CHROMIUM = Path(os.environ.get("LOOKALIKE_CHROMIUM", "/usr/bin/chromium"))
# the flags of a quiet, offline, throw-away headless chromium
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-proxy-server",
]
NAMESPACE = "web"
CATALOG = ("astronaut", "chelsea", "coffee", "rocket", "hubble", "retina", "cells", "camera", "coins", "china", "flower", "motorcycle")
CATEGORIES = {
    "astronaut": "people", "camera": "people", "chelsea": "animal", "coffee": "food", "rocket": "space",
    "hubble": "space", "retina": "science", "cells": "science", "coins": "object", "china": "place",
    "flower": "plant", "motorcycle": "object",
}
ADMIN_KEY = "web-admin-key-0123456789"
# over the gateway's 32 MiB image byte limit (LOOKALIKE_MAX_IMAGE_BYTES)
HUGE = b"\xff\xd8\xff\xe0" + bytes(33 * 1024 * 1024)


# ---- the catalog and the web app ---------------------------------------------------------------------

class WebCatalog:
    """Namespace `web`: collection `photos` (the real photos and a re-encoded copy of one, for the
    duplicates view) behind retriever `visual` (feature_search 20 → rerank 5), and an empty
    collection `uploads` with no bucket for the upload panel to fill."""

    def __init__(self, gateway: Gateway, photos: dict[str, bytes]) -> None:
        self.gateway = gateway
        self.parent = f"namespaces/{NAMESPACE}"
        self.collection = f"{self.parent}/collections/photos"
        self.retriever = f"{self.parent}/retrievers/visual"
        self.photos = photos
        gateway.namespaces.CreateNamespace(namespace_pb.CreateNamespaceRequest(namespace_id=NAMESPACE), timeout=10)
        for collection_id in ("photos", "uploads"):
            gateway.collections.CreateCollection(
                collection_pb.CreateCollectionRequest(parent=self.parent, collection_id=collection_id, feature_extractors=["effnet-lite0", "phash"]),
                timeout=60,
            )
        gateway.buckets.CreateBucket(
            bucket_pb.CreateBucketRequest(parent=self.parent, bucket_id="photos", bucket=bucket_pb.Bucket(collection=self.collection, auto_process=True)),
            timeout=10,
        )
        coins_copy = jpeg_bytes(Image.open(io.BytesIO(photos["coins"])), quality=70)
        items = [(f"{n}.jpg", photos[n], {"category": CATEGORIES[n], "name": n}) for n in CATALOG] + [
            ("coins-copy.jpg", coins_copy, {"category": "object", "name": "coins-copy"})
        ]

        def requests() -> Iterator[bucket_pb.UploadObjectsRequest]:
            for i, (filename, data, meta) in enumerate(items):
                yield bucket_pb.UploadObjectsRequest(parent=f"{self.parent}/buckets/photos" if i == 0 else "", filename=filename, content=data, metadata=struct(meta))

        upload = gateway.buckets.UploadObjects(requests(), timeout=120)
        assert upload.accepted_count == len(items), upload
        job = wait_job(gateway, upload.job)
        assert job.indexed == len(items), job
        gateway.retrievers.CreateRetriever(
            retriever_pb.CreateRetrieverRequest(
                parent=self.parent, retriever_id="visual",
                retriever=retriever_pb.Retriever(stages=[
                    retriever_pb.Stage(feature_search=retriever_pb.FeatureSearchStage(collection=self.collection, limit=20)),
                    retriever_pb.Stage(rerank=retriever_pb.RerankStage(limit=5)),
                ]),
            ),
            timeout=10,
        )

    def execute(self, query: retriever_pb.Query) -> retriever_pb.ExecuteRetrieverResponse:
        return self.gateway.retrievers.ExecuteRetriever(retriever_pb.ExecuteRetrieverRequest(name=self.retriever, query=query), timeout=60)


@pytest.fixture(scope="module")
def catalog(gateway: Gateway, photos: dict[str, bytes]) -> WebCatalog:
    return WebCatalog(gateway, photos)


@pytest.fixture(scope="module")
def web_url(mesh: Stack, catalog: WebCatalog) -> str:
    assert "web" in mesh.services, "the stack starts the web app (lookalike.stack SERVICES)"
    url = f"http://{mesh.addresses['web']}"
    with httpx.Client(trust_env=False) as client:
        assert client.get(f"{url}/readyz", timeout=10).json() == {"gateway": "SERVING"}
    return url


@pytest.fixture()
def api(web_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"{web_url}/api/namespaces/{NAMESPACE}", trust_env=False, timeout=120) as client:
        yield client


def crop(photo: bytes, box: tuple[float, float, float, float]) -> bytes:
    image = Image.open(io.BytesIO(photo)).convert("RGB")
    w, h = image.size
    return jpeg_bytes(image.crop((int(w * box[0]), int(h * box[1]), int(w * box[2]), int(h * box[3]))))


def grpc_error(call: Any) -> grpc.RpcError | None:
    try:
        call()
    except grpc.RpcError as exc:
        return exc
    return None


# ---- the HTTP API: gRPC statuses → HTTP statuses with the gateway's message ----------------------------

def test_every_grpc_status_has_an_http_status() -> None:
    assert set(HTTP_STATUS) == set(grpc.StatusCode)
    assert http_status(grpc.StatusCode.INVALID_ARGUMENT) == 400
    assert http_status(grpc.StatusCode.UNAUTHENTICATED) == 401
    assert http_status(grpc.StatusCode.PERMISSION_DENIED) == 403
    assert http_status(grpc.StatusCode.NOT_FOUND) == 404
    assert http_status(grpc.StatusCode.RESOURCE_EXHAUSTED) == 413
    assert http_status(grpc.StatusCode.UNIMPLEMENTED) == 501
    assert http_status(grpc.StatusCode.UNAVAILABLE) == 503


def test_app_on_its_own_headers_limits_and_an_absent_gateway() -> None:
    """No servers: the ASGI app in-process, its gateway address closed."""
    from starlette.testclient import TestClient

    from services.web.server import WebSettings, create_app

    settings = WebSettings(gateway_addr=f"127.0.0.1:{free_port()}", web_max_body_bytes=1000, rpc_timeout_s=5)
    with TestClient(create_app(settings)) as client:
        health = client.get("/healthz", headers={"x-request-id": "abc-123\r\nx: y"})
        assert health.json() == {"status": "serving"} and health.headers["x-request-id"] == "abc-123xy"
        assert health.headers["x-content-type-options"] == "nosniff" and health.headers["referrer-policy"] == "no-referrer"
        assert "script-src 'self'" in health.headers["content-security-policy"]
        assert client.get("/readyz").status_code == 503
        page = client.get("/")
        assert page.status_code == 200 and '<script type="module" src="/static/app.js">' in page.text
        for asset in ("app.js", "style.css"):
            assert client.get(f"/static/{asset}").status_code == 200
        # nothing from elsewhere: every script, style and fetch is this server's
        assert "http" not in "".join(line for line in page.text.splitlines() if "src=" in line or "href=" in line)
        big = client.post(f"/api/namespaces/{NAMESPACE}/search", content=b"x" * 2000, headers={"content-type": "application/octet-stream"})
        assert big.status_code == 413 and big.json()["error"]["code"] == "RESOURCE_EXHAUSTED"
        down = client.get("/api/namespaces")
        assert down.status_code == 503 and down.json()["error"]["code"] == "UNAVAILABLE"
        assert settings.gateway_addr in down.json()["error"]["message"]
        assert client.get("/api/nothing").json()["error"]["code"] == "NOT_FOUND"
        bad_filter = client.post(f"/api/namespaces/{NAMESPACE}/search", data={"retriever": "r", "text": "x", "filter": "a =="})
        assert bad_filter.status_code == 400 and bad_filter.json()["error"]["code"] == "INVALID_ARGUMENT"


@pytest.mark.integration
@pytest.mark.e2e
def test_api_lists_what_the_gateway_has(api: httpx.Client, web_url: str) -> None:
    with httpx.Client(trust_env=False) as client:
        namespaces = client.get(f"{web_url}/api/namespaces").json()["namespaces"]
        assert NAMESPACE in [n["id"] for n in namespaces]
        page = client.get(f"{web_url}/")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert "default-src 'self'" in page.headers["content-security-policy"]
        for asset in ("app.js", "style.css"):
            assert client.get(f"{web_url}/static/{asset}").status_code == 200
    collections = {c["id"]: c for c in api.get("/collections").json()["collections"]}
    assert collections["photos"]["image_count"] == len(CATALOG) + 1
    assert [e["name"] for e in collections["photos"]["extractors"]] == ["effnet-lite0", "phash"]
    retrievers = api.get("/retrievers").json()["retrievers"]
    visual = next(r for r in retrievers if r["id"] == "visual")
    assert visual["collections"] == ["photos"] and [s["kind"] for s in visual["stages"]] == ["feature_search", "rerank"]
    assert {"id": "photos", "name": f"namespaces/{NAMESPACE}/buckets/photos", "collection": "photos", "auto_process": True} in api.get("/buckets").json()["buckets"]


@pytest.mark.integration
@pytest.mark.e2e
def test_api_search_returns_what_the_gateway_returns(api: httpx.Client, catalog: WebCatalog) -> None:
    query = crop(catalog.photos["coffee"], (0.15, 0.1, 0.85, 0.8))
    body = api.post("/search", data={"retriever": "visual"}, files={"image": ("coffee-crop.jpg", query, "image/jpeg")}).json()
    direct = catalog.execute(retriever_pb.Query(image=query))
    assert [d["filename"] for d in body["documents"]] == [d.filename for d in direct.documents]
    first = body["documents"][0]
    assert first["filename"] == "coffee.jpg" and first["metadata"] == {"category": "food", "name": "coffee"}
    assert first["box"] and first["inlier_count"] > 0 and first["preview_url"].startswith("http")
    assert [t["stage"] for t in body["stage_timings"]] == ["feature_search[0]", "rerank[1]"]
    # a collection without a chosen retriever gets the CLI's default one, created on first use
    default = api.post("/search", data={"collection": "photos"}, files={"image": ("coffee-crop.jpg", query, "image/jpeg")}).json()
    assert default["retriever"] == f"namespaces/{NAMESPACE}/retrievers/photos-search-rerank"
    assert default["documents"][0]["filename"] == "coffee.jpg" and default["documents"][0]["box"]
    assert "photos-search-rerank" in [r["id"] for r in api.get("/retrievers").json()["retrievers"]]


@pytest.mark.integration
@pytest.mark.e2e
@pytest.mark.parametrize(
    ("form", "files", "status", "code"),
    [
        ({"retriever": "visual"}, {"image": ("notes.jpg", b"this is not an image", "image/jpeg")}, 400, "INVALID_ARGUMENT"),
        ({"retriever": "no-such-retriever"}, {"image": ("q.jpg", b"x", "image/jpeg")}, 404, "NOT_FOUND"),
        ({"retriever": "visual", "filter": "category =="}, {"image": ("q.jpg", b"x", "image/jpeg")}, 400, "INVALID_ARGUMENT"),
        ({"retriever": "visual"}, None, 400, "INVALID_ARGUMENT"),
    ],
    ids=["bad-image", "unknown-retriever", "bad-filter", "empty-query"],
)
def test_api_errors_carry_the_gateways_status_and_message(api: httpx.Client, catalog: WebCatalog, form: dict, files: dict | None, status: int, code: str) -> None:
    response = api.post("/search", data=form, files=files)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["status"] == status and error["message"]
    if files and form["retriever"] == "visual" and "filter" not in form:
        # the very message the gateway gives
        direct = grpc_error(lambda: catalog.execute(retriever_pb.Query(image=files["image"][1])))
        assert direct is not None and error["message"] == direct.details()


@pytest.mark.integration
@pytest.mark.e2e
@pytest.mark.parametrize("how", ["bytes", "url"])
def test_api_too_large_image(api: httpx.Client, catalog: WebCatalog, served: str, how: str) -> None:
    if how == "bytes":
        response = api.post("/search", data={"retriever": "visual"}, files={"image": ("huge.jpg", HUGE, "image/jpeg")})
        direct = grpc_error(lambda: catalog.execute(retriever_pb.Query(image=HUGE)))
    else:
        response = api.post("/search", data={"retriever": "visual", "image_url": f"{served}/huge.jpg"})
        direct = grpc_error(lambda: catalog.execute(retriever_pb.Query(image_url=f"{served}/huge.jpg")))
    assert direct is not None and direct.code() in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.INVALID_ARGUMENT)
    assert response.status_code == http_status(direct.code()), response.text
    assert response.json()["error"] == {"code": direct.code().name, "status": response.status_code, "message": direct.details()}
    if direct.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
        assert response.status_code == 413


@pytest.mark.integration
@pytest.mark.e2e
def test_api_unknown_things_are_404(api: httpx.Client, web_url: str) -> None:
    assert api.get("/collections/nope/duplicates").status_code == 404
    assert api.get("/jobs/0123456789abcdef0123").status_code == 404
    with httpx.Client(trust_env=False) as client:
        response = client.get(f"{web_url}/api/nothing/here")
        assert response.status_code == 404 and response.json()["error"]["code"] == "NOT_FOUND"


# ---- the browser ----------------------------------------------------------------------------------------

def _browser_missing() -> str:
    problems = []
    if not (CHROMIUM.exists() and os.access(CHROMIUM, os.X_OK)):
        problems.append(f"no chromium at {CHROMIUM}")
    importlib.invalidate_caches()
    try:
        importlib.import_module("playwright.sync_api")
    except ImportError as exc:
        problems.append(f"Playwright for Python is not installed ({exc})")
    return "; ".join(problems)


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    if missing := _browser_missing():
        make = shutil.which("make") or "make"
        run = subprocess.run([make, "browser-deps", f"CHROMIUM={CHROMIUM}"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=540)
        if still := _browser_missing():
            pytest.fail(
                f"the web page tests need a real browser: {missing}. `make browser-deps` (apt-get install chromium, "
                f"pip install '.[browser]') did not fix it: {still}\n--- make browser-deps (exit {run.returncode}) ---\n"
                f"{(run.stdout + run.stderr)[-4000:]}",
                pytrace=False,
            )
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=60_000)  # a loaded CI machine: searches and indexing can take seconds
    with sync_playwright() as playwright, tempfile.TemporaryDirectory(prefix="lookalike-chromium-") as profile:
        # a fresh profile per run: launch_persistent_context takes it as --user-data-dir
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS, viewport={"width": 1280, "height": 900},
        )
        yield context  # type: ignore[misc]  # a persistent context serves new_page() like a browser
        context.close()


@pytest.fixture()
def page(browser: Any, web_url: str, request: pytest.FixtureRequest) -> Iterator[Page]:
    page = browser.new_page()
    page.bring_to_front()  # keyboard input goes to the focused page (a persistent context has a blank one too)
    page.set_default_timeout(60_000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
    page.on("console", lambda msg: errors.append(f"console {msg.type}: {msg.text}") if msg.type == "error" and "status of 4" not in msg.text and "status of 5" not in msg.text else None)
    page.goto(f"{web_url}/?namespace={NAMESPACE}&collection=photos&retriever=visual")
    page.locator("#retriever option[value=visual]").wait_for(state="attached")
    yield page
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"), full_page=True)
    page.close()
    assert not errors, errors


def wait_until(page: Page, script: str, arg: Any = None, timeout: float = 30) -> Any:
    """Polls a JS function (page.evaluate is not subject to the page's CSP; wait_for_function is)."""
    deadline = time.monotonic() + timeout
    while True:
        value = page.evaluate(script, arg)
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def results(page: Page) -> list[str]:
    return page.locator("#results > li").evaluate_all("items => items.map(li => li.dataset.filename)")


def wait_for_search(page: Page) -> None:
    """Until the search in flight has answered (results or an error)."""
    from playwright.sync_api import expect

    expect(page.locator("#search-status")).not_to_have_text("Searching…")
    expect(page.locator("#search-status")).not_to_have_text("")


def thumbnails_loaded(page: Page) -> bool:
    return bool(wait_until(page, "() => [...document.querySelectorAll('#results img')].every(i => i.complete && i.naturalWidth > 0)"))


def drop_file(page: Page, selector: str, name: str, data: bytes, mime: str = "image/jpeg") -> None:
    transfer = page.evaluate_handle(
        """([name, b64, mime]) => {
            const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
            const dt = new DataTransfer();
            dt.items.add(new File([bytes], name, {type: mime}));
            return dt;
        }""",
        [name, base64.b64encode(data).decode(), mime],
    )
    page.dispatch_event(selector, "dragenter", {"dataTransfer": transfer})
    page.dispatch_event(selector, "dragover", {"dataTransfer": transfer})
    page.dispatch_event(selector, "drop", {"dataTransfer": transfer})


@pytest.mark.integration
@pytest.mark.e2e
def test_drop_a_cropped_photo_finds_its_original_first_with_the_region_boxed(page: Page, catalog: WebCatalog) -> None:
    region = (0.15, 0.1, 0.85, 0.8)
    drop_file(page, "#drop-zone", "coffee-crop.jpg", crop(catalog.photos["coffee"], region))
    wait_for_search(page)
    names = results(page)
    assert names and names[0] == "coffee.jpg", names
    first = page.locator("#results > li").first
    box = first.locator(".box")
    assert box.count() == 1 and box.is_visible()
    coords = json.loads(box.get_attribute("data-box") or "{}")
    # the box is the cropped region, within a tenth of the image
    for got, want in zip((coords["x_min"], coords["y_min"], coords["x_max"], coords["y_max"]), region):
        assert abs(got - want) < 0.1, (coords, region)
    # and it is drawn there, over the thumbnail
    assert thumbnails_loaded(page)
    img, drawn = first.locator("img").bounding_box(), box.bounding_box()
    assert img and drawn
    assert abs((drawn["x"] - img["x"]) / img["width"] - coords["x_min"]) < 0.02
    assert abs((drawn["y"] - img["y"]) / img["height"] - coords["y_min"]) < 0.02
    assert abs(drawn["width"] / img["width"] - (coords["x_max"] - coords["x_min"])) < 0.02
    assert abs(drawn["height"] / img["height"] - (coords["y_max"] - coords["y_min"])) < 0.02
    # score, metadata and the query preview are shown; the status is announced
    assert "score" in first.locator(".score").inner_text()
    assert "food" in first.locator(".meta").inner_text()
    assert page.locator("#query-preview").is_visible()
    assert "match" in page.locator("#search-status").inner_text()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "search-drop.png"), full_page=True)
    if not DOCS_SCREENSHOT.exists() or os.environ.get("LOOKALIKE_UPDATE_DOCS_SCREENSHOT") == "1":
        DOCS_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(DOCS_SCREENSHOT), full_page=True)


@pytest.mark.integration
@pytest.mark.e2e
def test_file_picker_and_pasted_image(page: Page, catalog: WebCatalog) -> None:
    chelsea = crop(catalog.photos["chelsea"], (0.2, 0.1, 0.9, 0.9))
    page.set_input_files("#file-input", files=[{"name": "chelsea-crop.jpg", "mimeType": "image/jpeg", "buffer": chelsea}])
    wait_for_search(page)
    assert results(page)[0] == "chelsea.jpg"

    rocket = jpeg_bytes(ImageOps.mirror(Image.open(io.BytesIO(catalog.photos["rocket"]))))
    page.evaluate(
        """(b64) => {
            const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
            const dt = new DataTransfer();
            dt.items.add(new File([bytes], 'image.png', {type: 'image/jpeg'}));
            document.dispatchEvent(new ClipboardEvent('paste', {clipboardData: dt, bubbles: true}));
        }""",
        base64.b64encode(rocket).decode(),
    )
    from playwright.sync_api import expect

    expect(page.locator("#query-name")).to_contain_text("pasted image")
    wait_for_search(page)
    assert results(page)[0] == "rocket.jpg"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, catalog: WebCatalog) -> Iterator[str]:
    """http://127.0.0.1:PORT serving china-crop.jpg and huge.jpg (over the gateway's image byte limit)."""
    folder = tmp_path_factory.mktemp("served")
    (folder / "china-crop.jpg").write_bytes(crop(catalog.photos["china"], (0.1, 0.2, 0.8, 0.9)))
    (folder / "huge.jpg").write_bytes(HUGE)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *a, **k: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.handle_error = lambda *args: None  # type: ignore[method-assign]  # the gateway hangs up on huge.jpg early, as it should
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.mark.integration
@pytest.mark.e2e
def test_query_by_url(page: Page, served: str) -> None:
    page.fill("#image-url", f"{served}/china-crop.jpg")
    page.press("#image-url", "Enter")
    wait_for_search(page)
    assert results(page)[0] == "china.jpg"
    # an image over the size limit: said plainly
    page.fill("#image-url", f"{served}/huge.jpg")
    page.click("#search-button")
    wait_for_search(page)
    error_box = page.locator("#search-error")
    assert error_box.is_visible() and results(page) == []
    if error_box.get_attribute("data-code") == "RESOURCE_EXHAUSTED":
        assert "Too large" in error_box.inner_text() and "HTTP 413" in error_box.inner_text()
    assert "larger" in error_box.inner_text() or "limit" in error_box.inner_text()


@pytest.mark.integration
@pytest.mark.e2e
def test_query_by_text_shows_what_the_gateway_answers(page: Page, catalog: WebCatalog) -> None:
    text = "a cup of coffee"
    page.fill("#query-text", text)
    page.press("#query-text", "Enter")
    wait_for_search(page)
    direct_error = grpc_error(lambda: catalog.execute(retriever_pb.Query(text=text)))
    error_box = page.locator("#search-error")
    if direct_error is None:
        # the text path exists: the page shows the gateway's ranking
        expected = [d.filename for d in catalog.execute(retriever_pb.Query(text=text)).documents]
        assert results(page) == expected and error_box.is_hidden()
    else:
        # e.g. FAILED_PRECONDITION while no extractor embeds text: the gateway's message, plainly
        assert error_box.is_visible(), "the error is shown"
        assert error_box.get_attribute("data-code") == direct_error.code().name
        assert direct_error.details() in error_box.inner_text()
        assert error_box.get_attribute("role") == "alert"
        assert results(page) == []


@pytest.mark.integration
@pytest.mark.e2e
def test_bad_file_shows_a_plain_message(page: Page, catalog: WebCatalog) -> None:
    page.set_input_files("#file-input", files=[{"name": "notes.jpg", "mimeType": "image/jpeg", "buffer": b"these are my notes, not a photo"}])
    wait_for_search(page)
    error_box = page.locator("#search-error")
    assert error_box.is_visible() and error_box.get_attribute("data-code") == "INVALID_ARGUMENT"
    text = error_box.inner_text()
    assert "Rejected" in text and "not a recognised image" in text and "HTTP 400" in text, text
    assert results(page) == []
    # the next good query clears it
    page.set_input_files("#file-input", files=[{"name": "coins.jpg", "mimeType": "image/jpeg", "buffer": catalog.photos["coins"]}])
    wait_for_search(page)
    assert error_box.is_hidden() and results(page)[0] in ("coins.jpg", "coins-copy.jpg")


@pytest.mark.integration
@pytest.mark.e2e
def test_upload_panel_indexes_a_folder_with_progress(page: Page, catalog: WebCatalog, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    # a folder as `lookalike index` reads it: sub-folders and <image>.json sidecars become metadata
    folder = tmp_path / "trip"
    (folder / "cats").mkdir(parents=True)
    cat = jpeg_bytes(ImageOps.grayscale(Image.open(io.BytesIO(catalog.photos["chelsea"]))))
    (folder / "cats" / "grey-cat.jpg").write_bytes(cat)
    (folder / "cats" / "grey-cat.jpg.json").write_text(json.dumps({"rating": 5}))
    (folder / "coffee-small.jpg").write_bytes(jpeg_bytes(Image.open(io.BytesIO(catalog.photos["coffee"])).resize((200, 133))))
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    (folder / "README.txt").write_text("not an image: skipped by the page")

    page.select_option("#collection", "uploads")
    # keyboard: to the Upload tab with the arrow keys
    page.focus("#tab-search")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    assert page.evaluate("document.activeElement.id") == "tab-upload"
    expect(page.locator("#panel-upload")).to_be_visible()
    assert page.locator("#bucket").input_value() == "new:uploads"

    page.set_input_files("#upload-folder", str(folder))
    expect(page.locator("#upload-selection")).to_contain_text("3 images chosen")
    expect(page.locator("#upload-selection")).to_contain_text("1 other file skipped")
    page.fill("#upload-meta", "source=browser, year=2026")
    page.click("#upload-button")
    expect(page.locator("#upload-status")).to_contain_text("Done", timeout=120_000)
    assert page.locator("#upload-status").inner_text() == "Done: 2 indexed, 0 failed, 1 rejected."
    assert page.evaluate("[document.querySelector('#upload-progress').value, document.querySelector('#upload-progress').max]")[0] > 0
    assert page.evaluate("document.querySelector('#index-progress').value === document.querySelector('#index-progress').max")
    expect(page.locator("#upload-problems")).to_contain_text("broken.jpg")
    page.screenshot(path=str(ARTIFACTS / "upload.png"), full_page=True)

    # indexed through the gateway with the folder's metadata, into the new bucket of `uploads`
    gw = catalog.gateway
    bucket = gw.buckets.GetBucket(bucket_pb.GetBucketRequest(name=f"namespaces/{NAMESPACE}/buckets/uploads"), timeout=10).bucket
    assert bucket.collection == f"namespaces/{NAMESPACE}/collections/uploads" and bucket.auto_process
    count = gw.collections.GetCollection(collection_pb.GetCollectionRequest(name=bucket.collection), timeout=10).collection.image_count
    assert count == 2
    gw.ensure(gw.retrievers.CreateRetriever, retriever_pb.CreateRetrieverRequest(
        parent=f"namespaces/{NAMESPACE}", retriever_id="uploads-plain",
        retriever=retriever_pb.Retriever(stages=[retriever_pb.Stage(feature_search=retriever_pb.FeatureSearchStage(collection=bucket.collection, limit=5))]),
    ))
    hits = gw.retrievers.ExecuteRetriever(
        retriever_pb.ExecuteRetrieverRequest(name=f"namespaces/{NAMESPACE}/retrievers/uploads-plain", query=retriever_pb.Query(image=cat)), timeout=60
    ).documents
    assert hits[0].filename == "cats/grey-cat.jpg"
    assert dict(hits[0].metadata) == {"folder": "cats", "rating": 5, "source": "browser", "year": 2026}
    # the collection list shows the new count
    expect(page.locator("#collection option[value=uploads]")).to_contain_text("2 images")


@pytest.mark.integration
@pytest.mark.e2e
def test_duplicates_view(page: Page, catalog: WebCatalog) -> None:
    from playwright.sync_api import expect

    page.click("#tab-duplicates")
    page.click("#duplicates-button")
    direct = grpc_error(lambda: catalog.gateway.collections.GetDuplicateReport(
        collection_pb.GetDuplicateReportRequest(name=catalog.collection), timeout=60))
    if direct is not None:
        # not (yet) in the gateway: the page says so plainly, with the gateway's status
        error_box = page.locator("#duplicates-error")
        expect(error_box).to_be_visible()
        assert error_box.get_attribute("data-code") == direct.code().name
        if direct.code() == grpc.StatusCode.UNIMPLEMENTED:
            assert "Not available" in error_box.inner_text()
        return
    expect(page.locator("#duplicates-status")).to_contain_text("among", timeout=60_000)
    status = page.locator("#duplicates-status").inner_text()
    assert f"among {len(CATALOG) + 1} images" in status, status
    groups = page.locator("#duplicate-groups > li").all_inner_texts()
    assert any("coins.jpg" in g and "coins-copy.jpg" in g for g in groups), groups


@pytest.mark.integration
@pytest.mark.e2e
def test_keyboard_and_labels(page: Page) -> None:
    from playwright.sync_api import expect

    # every control has an accessible name; live regions and alerts are in place
    unnamed = page.evaluate("""() => [...document.querySelectorAll('input, select, button, textarea')]
        .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label') && !el.textContent.trim())
        .map(el => el.id || el.outerHTML)""")
    assert unnamed == []
    for region in ("#search-status", "#duplicates-status", "#upload-status"):
        assert page.get_attribute(region, "aria-live") == "polite"
    for alert in ("#search-error", "#duplicates-error", "#upload-error", "#global-error"):
        assert page.get_attribute(alert, "role") == "alert"
    # Tab reaches the file picker, which shows its focus, and Enter opens it
    page.focus("#tab-search")
    for _ in range(6):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "file-input":
            break
    assert page.evaluate("document.activeElement.id") == "file-input"
    outline = page.evaluate("getComputedStyle(document.querySelector('label[for=file-input]')).outlineStyle")
    assert outline not in ("", "none"), "the focused file picker shows a focus ring"
    # Enter activates it (counted in the page) and opens the file chooser
    page.evaluate("document.querySelector('#file-input').addEventListener('click', () => { window.pickerOpened = (window.pickerOpened || 0) + 1; })")
    for attempt in range(3):  # headless chromium now and then drops the chooser event under load; the activation is what counts
        try:
            with page.expect_file_chooser(timeout=10_000) as chooser:
                page.keyboard.press("Enter")
            assert not chooser.value.is_multiple()
            break
        except Exception:
            assert page.evaluate("window.pickerOpened") == attempt + 1, "Enter on the focused file input activated it"
            page.focus("#file-input")
    assert page.evaluate("window.pickerOpened") >= 1
    # typed text + Enter searches
    page.focus("#query-text")
    page.keyboard.type("anything")
    page.keyboard.press("Enter")
    wait_for_search(page)
    expect(page.locator("#search-status")).not_to_be_empty()


# ---- a gateway that requires API keys ------------------------------------------------------------------

@pytest.fixture(scope="module")
def secured(mesh: Stack, catalog: WebCatalog) -> Iterator[tuple[str, str]]:
    """A gateway replica with API keys on and a second web app in front of it: (web URL, a key for
    namespace `web`)."""
    gateway_addr, web_addr = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"

    def web_serving() -> None:
        if not http_health_check(web_addr):
            raise RuntimeError(f"{web_addr} not serving yet")

    try:
        mesh.start_service("gateway-webauth", module="services.gateway", address=gateway_addr,
                           env={"LOOKALIKE_AUTH_ENABLED": "true", "LOOKALIKE_ADMIN_API_KEY": ADMIN_KEY})
        mesh.start_service("web-auth", module="services.web", address=web_addr,
                           env={"LOOKALIKE_GATEWAY_ADDR": gateway_addr}, health=web_serving)
        admin = Gateway(gateway_addr)
        key = admin.namespaces.CreateApiKey(
            namespace_pb.CreateApiKeyRequest(parent=f"namespaces/{NAMESPACE}", display_name="web test"),
            metadata=[("authorization", f"Bearer {ADMIN_KEY}")], timeout=10,
        ).key
        yield f"http://{web_addr}", key
    finally:
        mesh.stop_service("web-auth")
        mesh.stop_service("gateway-webauth")


@pytest.mark.integration
@pytest.mark.e2e
def test_api_passes_the_api_key_and_maps_auth_errors(secured: tuple[str, str]) -> None:
    url, key = secured
    with httpx.Client(base_url=f"{url}/api", trust_env=False, timeout=30) as client:
        missing = client.get("/namespaces")
        assert missing.status_code == 401 and missing.json()["error"]["code"] == "UNAUTHENTICATED"
        assert "API key" in missing.json()["error"]["message"]
        assert client.get("/namespaces", headers={"authorization": "Bearer lk_kdeadbeef_nope"}).status_code == 401
        auth = {"authorization": f"Bearer {key}"}
        assert [n["id"] for n in client.get("/namespaces", headers=auth).json()["namespaces"]] == [NAMESPACE]
        assert client.get(f"/namespaces/{NAMESPACE}/collections", headers=auth).status_code == 200
        other = client.get("/namespaces/e2e/collections", headers=auth)
        assert other.status_code == 403 and other.json()["error"]["code"] == "PERMISSION_DENIED"
        assert f"namespaces/{NAMESPACE}" in other.json()["error"]["message"]


@pytest.mark.integration
@pytest.mark.e2e
def test_page_asks_for_an_api_key_and_uses_it(browser: Any, secured: tuple[str, str], catalog: WebCatalog) -> None:
    from playwright.sync_api import expect

    url, key = secured
    page = browser.new_page()
    page.set_default_timeout(60_000)
    try:
        page.goto(f"{url}/")
        error_box = page.locator("#global-error")
        expect(error_box).to_be_visible()
        assert error_box.get_attribute("data-code") == "UNAUTHENTICATED"
        assert "Unauthorised" in error_box.inner_text() and "HTTP 401" in error_box.inner_text()
        expect(page.locator("#api-key")).to_be_visible()  # the key form opened itself
        page.screenshot(path=str(ARTIFACTS / "auth-required.png"), full_page=True)
        page.fill("#api-key", key)
        page.press("#api-key", "Enter")
        expect(error_box).to_be_hidden()
        expect(page.locator("#auth-summary")).to_have_text("API key (in use)")
        page.locator("#retriever option[value=visual]").wait_for(state="attached")
        assert page.locator("#namespace option").evaluate_all("o => o.map(x => x.value)") == [NAMESPACE]
        page.select_option("#retriever", "visual")
        drop_file(page, "#drop-zone", "coffee-crop.jpg", crop(catalog.photos["coffee"], (0.15, 0.1, 0.85, 0.8)))
        wait_for_search(page)
        assert results(page)[0] == "coffee.jpg"
        # the key stays in this tab only, never in the page's URL
        assert key not in page.url
    finally:
        page.close()
