"""The benchmark relay's request counting: HTTP/1.1 requests framed from arbitrary chunks."""

from bench.relay import COUNTERS, RequestCounter, request_kind


def counted(*chunks: bytes) -> dict[str, int]:
    counters = dict.fromkeys(COUNTERS, 0)
    counter = RequestCounter(counters)
    for chunk in chunks:
        counter.feed(chunk)
    return {k: v for k, v in counters.items() if v}


def test_object_gets_listings_and_heads_are_told_apart() -> None:
    assert request_kind("GET", "/bench/images/a.jpg") == "get"
    assert request_kind("GET", "/bench?list-type=2&prefix=images%2F&delimiter=%2F") == "list"
    assert request_kind("GET", "/v1/AUTH_x/bench?format=json&delimiter=/&prefix=a/") == "list"
    assert request_kind("HEAD", "/bench/a.jpg") == "head"
    assert request_kind("PUT", "/bench/a.jpg") == "other"


def test_requests_split_anywhere_across_chunks_are_each_counted_once() -> None:
    stream = (b"GET /b/one HTTP/1.1\r\nHost: x\r\n\r\n"
              b"HEAD /b/two HTTP/1.1\r\nHost: x\r\n\r\n"
              b"GET /b?prefix=a HTTP/1.1\r\nHost: x\r\n\r\n")
    for cut in range(1, len(stream)):
        assert counted(stream[:cut], stream[cut:]) == {"get": 1, "head": 1, "list": 1}
    assert counted(*(stream[i:i + 1] for i in range(len(stream)))) == {
        "get": 1, "head": 1, "list": 1}


def test_a_body_is_skipped_by_its_content_length() -> None:
    body = b"GET /b/fake HTTP/1.1\r\n\r\n" * 3
    head = b"PUT /b/obj HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % len(body)
    assert counted(head + body[:10], body[10:] + b"GET /b/real HTTP/1.1\r\n\r\n") == {
        "other": 1, "get": 1}


def test_a_chunked_body_stops_counting_on_that_connection() -> None:
    head = b"PUT /b/obj HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
    assert counted(head, b"5\r\nGET /\r\n0\r\n\r\n", b"GET /b/x HTTP/1.1\r\n\r\n") == {
        "other": 1, "unframed": 1}


def test_an_endless_head_is_unframed_not_held() -> None:
    counters = dict.fromkeys(COUNTERS, 0)
    counter = RequestCounter(counters)
    counter.feed(b"GET /" + b"a" * (128 << 10))
    assert counters["unframed"] == 1 and not counter.head
