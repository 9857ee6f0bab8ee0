"""Tests for :mod:`sipwarden.sip.sdp`: parsing, byte-exact round trips, editing, strictness.

The sample bodies are the SDP examples of the RFCs (annotated with what each
must read as), the SDP of RFC 4475's ``sdp01.dat`` and what ``mpart01.dat``
carries instead (no SDP: its parts must not parse as SDP).
"""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sipwarden.errors import LocalProtocolError, RemoteProtocolError
from sipwarden.sip import sdp as sdp_module
from sipwarden.sip.sdp import (
    Attribute,
    Connection,
    Crypto,
    Fingerprint,
    KeyParam,
    MediaDescription,
    Origin,
    Rtcp,
    SessionDescription,
    parse_sdp,
)


def body(*lines: str, eol: str = "\r\n", final: bool = True) -> bytes:
    """An SDP body from lines (latin-1), with the given line end."""
    text = eol.join(lines) + (eol if final else "")
    return text.encode("latin-1")


# --- sample bodies ----------------------------------------------------------------

# RFC 4566 section 5, the example at the end of the section (multicast c=,
# session-level direction, media without c= of their own).
RFC4566_EXAMPLE = body(
    "v=0",
    "o=jdoe 2890844526 2890842807 IN IP4 10.47.16.5",
    "s=SDP Seminar",
    "i=A Seminar on the session description protocol",
    "u=http://www.example.com/seminars/sdp.pdf",
    "e=j.doe@example.com (Jane Doe)",
    "c=IN IP4 224.2.17.12/127",
    "t=2873397496 2873404696",
    "a=recvonly",
    "m=audio 49170 RTP/AVP 0",
    "m=video 51372 RTP/AVP 99",
    "a=rtpmap:99 h263-1998/90000",
)

# RFC 3264 section 10.1: offer and answer (FQDN addresses, "s=" empty, a
# rejected stream with port 0).
RFC3264_OFFER = body(
    "v=0",
    "o=alice 2890844526 2890844526 IN IP4 host.atlanta.example.com",
    "s=",
    "c=IN IP4 host.atlanta.example.com",
    "t=0 0",
    "m=audio 49170 RTP/AVP 0 8 97",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:8 PCMA/8000",
    "a=rtpmap:97 iLBC/8000",
    "m=video 51372 RTP/AVP 31 32",
    "a=rtpmap:31 H261/90000",
    "a=rtpmap:32 MPV/90000",
)
RFC3264_ANSWER = body(
    "v=0",
    "o=bob 2808844564 2808844564 IN IP4 host.biloxi.example.com",
    "s=",
    "c=IN IP4 host.biloxi.example.com",
    "t=0 0",
    "m=audio 49172 RTP/AVP 0 8",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:8 PCMA/8000",
    "m=video 0 RTP/AVP 32",
    "a=rtpmap:32 MPV/90000",
)

# RFC 4568 section 4 (SDES offer; the RFC folds the crypto lines for print).
RFC4568_OFFER = body(
    "v=0",
    "o=sam 2890844526 2890842807 IN IP4 10.47.16.5",
    "s=SRTP Discussion",
    "i=A discussion of Secure RTP",
    "u=http://www.example.com/seminars/srtp.pdf",
    "e=marge@example.com (Marge Simpson)",
    "c=IN IP4 168.2.17.12",
    "t=2873397496 2873404696",
    "m=audio 49170 RTP/SAVP 0",
    "a=crypto:1 AES_CM_128_HMAC_SHA1_80 "
    "inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:4 FEC_ORDER=FEC_SRTP",
    "a=crypto:2 F8_128_HMAC_SHA1_80 "
    "inline:MTIzNDU2Nzg5QUJDREUwMTIzNDU2Nzg5QUJjZGVm|2^20|1:4;"
    "inline:QUJjZGVmMTIzNDU2Nzg5QUJDREUwMTIzNDU2Nzg5|2^20|2:4 FEC_ORDER=FEC_SRTP",
)

FP = (
    "DA:52:67:C5:2A:2E:91:13:A2:7D:3A:E1:2E:A4:F3:28:"
    "90:67:71:0E:B7:6F:7B:56:79:F4:B2:D1:54:4B:92:7E"
)
# A WebRTC (browser) offer: DTLS-SRTP (RFC 5763/5764), media-level fingerprint,
# BUNDLE with port 9 and c=IN IP4 0.0.0.0, and a data channel.
WEBRTC_OFFER = body(
    "v=0",
    "o=- 4611731400430051336 2 IN IP4 127.0.0.1",
    "s=-",
    "t=0 0",
    "a=group:BUNDLE 0 1",
    "a=extmap-allow-mixed",
    "a=msid-semantic: WMS",
    "m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126",
    "c=IN IP4 0.0.0.0",
    "a=rtcp:9 IN IP4 0.0.0.0",
    "a=ice-ufrag:EsAw",
    "a=ice-pwd:bP+XJMM09aR8AiX1jdukzR6Y",
    "a=ice-options:trickle",
    f"a=fingerprint:sha-256 {FP}",
    "a=setup:actpass",
    "a=mid:0",
    "a=sendrecv",
    "a=rtcp-mux",
    "a=rtpmap:111 opus/48000/2",
    "a=fmtp:111 minptime=10;useinbandfec=1",
    "m=application 9 UDP/DTLS/SCTP webrtc-datachannel",
    "c=IN IP4 0.0.0.0",
    "a=ice-ufrag:EsAw",
    "a=ice-pwd:bP+XJMM09aR8AiX1jdukzR6Y",
    f"a=fingerprint:sha-256 {FP}",
    "a=setup:actpass",
    "a=mid:1",
    "a=sctp-port:5000",
)
# Firefox puts the fingerprint at session level (RFC 8122 5: it then applies
# to every media description).
SESSION_FINGERPRINT_OFFER = body(
    "v=0",
    "o=mozilla...THIS_IS_SDPARTA-99.0 7052848360639826063 0 IN IP4 0.0.0.0",
    "s=-",
    "t=0 0",
    f"a=fingerprint:sha-256 {FP}",
    "a=group:BUNDLE 0",
    "a=ice-options:trickle",
    "a=msid-semantic:WMS *",
    "m=audio 9 UDP/TLS/RTP/SAVP 109 9 0 8 101",
    "c=IN IP4 0.0.0.0",
    "a=sendrecv",
    "a=mid:0",
    "a=rtcp-mux",
    "a=rtpmap:109 opus/48000/2",
    "a=setup:actpass",
)
SESSION_AND_MEDIA_C = body(
    "v=0",
    "o=bob 1 1 IN IP4 192.0.2.1",
    "s=call",
    "c=IN IP4 192.0.2.1",
    "t=0 0",
    "m=audio 5004 RTP/AVP 0",
    "a=rtpmap:0 PCMU/8000",
    "m=video 5006 RTP/AVP 96",
    "c=IN IP4 192.0.2.99",
    "b=AS:512",
    "a=rtpmap:96 H264/90000",
    "a=sendonly",
)
IPV6_OFFER = body(
    "v=0",
    "o=- 1 1 IN IP6 2001:db8::1",
    "s=-",
    "c=IN IP6 2001:db8::1",
    "t=0 0",
    "m=audio 6000 RTP/AVP 0",
)
PORT_ZERO_AND_COUNT = body(
    "v=0",
    "o=- 1 1 IN IP4 192.0.2.1",
    "s=-",
    "c=IN IP4 192.0.2.1",
    "t=0 0",
    "m=audio 0 RTP/AVP 0",
    "m=video 49170/2 RTP/AVP 31",
)
# RFC 4475 sdp01.dat, the body (Content-Length: 150).
RFC4475_SDP01 = (
    b"v=0\r\n"
    b"o=mhandley 29739 7272939 IN IP4 192.0.2.5\r\n"
    b"s=-\r\n"
    b"c=IN IP4 192.0.2.5\r\n"
    b"t=0 0\r\n"
    b"m=audio 49217 RTP/AVP 0 12\r\n"
    b"m=video 3227 RTP/AVP 31\r\n"
    b"a=rtpmap:31 LPC\r\n"
)
# RFC 4475 mpart01.dat carries no SDP: a multipart/mixed body with a text/plain
# part and a binary (CMS) part. Its body and parts, cut short, are not SDP.
RFC4475_MPART01_BODY = (
    b"--7a9cbec02ceef655\r\n"
    b"Content-Type: text/plain\r\n"
    b"Content-Transfer-Encoding: binary\r\n"
    b"\r\n"
    b"Hello\r\n"
    b"--7a9cbec02ceef655\r\n"
)
RFC4475_MPART01_TEXT = b"Hello"
RFC4475_MPART01_BINARY = (
    b"0\x82\x01R\x06\t*\x86H\x86\xf7\r\x01\x07\x02\xa0\x82\x01C0\x82\x01?\x02\x01"
    b"\x011\t0\x07\x06\x05+\x0e\x03\x02\x1a0\x0b\x06\t*\x86H\x86\xf7\r\x01\x07\x011"
)
PSTN_OFFER = body(
    "v=0",
    "o=- 1 1 IN IP4 192.0.2.1",
    "s=-",
    "c=PSTN E164 +15555550100",
    "t=0 0",
    "m=audio 9 PSTN -",
)

SAMPLES = {
    "rfc4566": RFC4566_EXAMPLE,
    "rfc3264-offer": RFC3264_OFFER,
    "rfc3264-answer": RFC3264_ANSWER,
    "rfc4568": RFC4568_OFFER,
    "webrtc": WEBRTC_OFFER,
    "session-fingerprint": SESSION_FINGERPRINT_OFFER,
    "session-and-media-c": SESSION_AND_MEDIA_C,
    "ipv6": IPV6_OFFER,
    "port-zero-and-count": PORT_ZERO_AND_COUNT,
    "rfc4475-sdp01": RFC4475_SDP01,
    "pstn": PSTN_OFFER,
}


def with_eol(data: bytes, eol: bytes) -> bytes:
    return data.replace(b"\r\n", eol)


def replace_lines(data: bytes, changes: dict[bytes, bytes | None]) -> bytes:
    """``data`` with whole lines swapped (None removes the line); line ends kept."""
    out = []
    for line in data.split(b"\r\n")[:-1]:
        new = changes.get(line, line)
        if new is not None:
            out.append(new + b"\r\n")
    return b"".join(out)


def exercise(sd: SessionDescription) -> None:
    """Touch every reader; none may raise on any parsed input."""
    repr(sd)
    _ = (sd.version, sd.origin, sd.session_name, sd.connection, sd.direction, sd.charset)
    _ = (sd.attributes, sd.get_attributes("x"), sd.has_attribute("rtcp"), sd.defects)
    if sd.session_name is not None:
        sd.decode_text(sd.session_name)
    sd.offers_srtp()
    sd.offers_srtp(require_all=False)
    for media in sd.media:
        repr(media)
        _ = (media.media, media.port, media.port_count, media.proto, media.formats)
        _ = (media.connection, media.effective_connection, media.attributes, media.setup)
        _ = (media.fingerprints, media.fingerprint, media.rtcp, media.direction)
        _ = (media.is_rtp, media.is_srtp)
        for crypto in media.crypto:
            repr(crypto)
            for param in crypto.key_params:
                _ = (param.key_salt, param.lifetime, param.mki)


def edit_everything(sd: SessionDescription) -> None:
    """Apply every kind of edit; on a lenient parse an edit may refuse (LocalProtocolError)."""
    try:
        sd.set_origin(username="gw", address="203.0.113.7", sess_version=7)
    except LocalProtocolError:
        assert sd.origin is None
    sd.set_session_name("-")
    sd.set_connection_address("203.0.113.7")
    sd.remove_fields("iuep")
    sd.add_attribute("tool", "sipwarden")
    sd.set_direction("sendrecv")
    for media in sd.media:
        media.set_port(40000)
        media.set_rtcp(40001)
        media.remove_attributes("candidate")
        media.replace_attributes("ptime", ["20"])
        media.set_direction("sendonly")


# --- reading ----------------------------------------------------------------------


class TestSamples:
    @pytest.mark.parametrize("name", list(SAMPLES))
    @pytest.mark.parametrize("eol", [b"\r\n", b"\n"])
    def test_round_trip_is_byte_exact(self, name: str, eol: bytes) -> None:
        data = with_eol(SAMPLES[name], eol)
        sd = parse_sdp(data)
        assert sd.serialize() is data
        assert bytes(sd) == data
        exercise(sd)
        # The unchanged description survives a forced re-join too.
        sd._dirty = True
        assert sd.serialize() == data

    @pytest.mark.parametrize("name", list(SAMPLES))
    def test_without_final_line_end(self, name: str) -> None:
        data = SAMPLES[name][:-2]
        sd = parse_sdp(data)
        sd._dirty = True
        assert sd.serialize() == data

    @pytest.mark.parametrize("name", list(SAMPLES))
    def test_mixed_line_ends_are_kept(self, name: str) -> None:
        lines = SAMPLES[name].split(b"\r\n")[:-1]
        data = b"".join(line + (b"\n" if i % 2 else b"\r\n") for i, line in enumerate(lines))
        sd = parse_sdp(data)
        assert sd.serialize() is data
        sd._dirty = True
        assert sd.serialize() == data

    def test_rfc4566_example(self) -> None:
        sd = parse_sdp(RFC4566_EXAMPLE)
        assert sd.version == 0
        assert sd.origin == Origin("jdoe", "2890844526", "2890842807", "IN", "IP4", "10.47.16.5")
        assert sd.session_name == "SDP Seminar"
        assert sd.connection == Connection("IN", "IP4", "224.2.17.12", ttl=127)
        assert sd.direction == "recvonly"
        assert sd.attributes == [Attribute("recvonly", None)]
        audio, video = sd.media
        assert (audio.media, audio.port, audio.port_count, audio.proto, audio.formats) == (
            "audio",
            49170,
            1,
            "RTP/AVP",
            ("0",),
        )
        assert audio.connection is None
        assert audio.effective_connection == sd.connection
        assert audio.direction == "recvonly"  # the session-level default
        assert video.attributes == [Attribute("rtpmap", "99 h263-1998/90000")]
        assert video.get_attributes("rtpmap") == ["99 h263-1998/90000"]
        assert not video.is_srtp
        assert not sd.offers_srtp()
        assert sd.defects == []

    def test_rfc3264_offer_and_answer(self) -> None:
        offer = parse_sdp(RFC3264_OFFER)
        assert offer.session_name == ""
        assert any("empty s=" in d for d in offer.defects)  # tolerated, noted
        assert offer.origin is not None
        assert offer.origin.address == "host.atlanta.example.com"
        assert offer.connection == Connection("IN", "IP4", "host.atlanta.example.com")
        assert [m.formats for m in offer.media] == [("0", "8", "97"), ("31", "32")]
        answer = parse_sdp(RFC3264_ANSWER)
        assert [m.port for m in answer.media] == [49172, 0]
        assert answer.media[1].direction == "sendrecv"

    def test_rfc4568_crypto(self) -> None:
        sd = parse_sdp(RFC4568_OFFER)
        (audio,) = sd.media
        first, second = audio.crypto
        assert first.tag == 1
        assert first.suite == "AES_CM_128_HMAC_SHA1_80"
        assert first.session_params == ("FEC_ORDER=FEC_SRTP",)
        (key,) = first.key_params
        assert key.method == "inline"
        assert key.key_salt == "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz"
        assert key.lifetime == "2^20"
        assert key.mki == "1:4"
        assert second.tag == 2
        assert second.suite == "F8_128_HMAC_SHA1_80"
        assert [k.mki for k in second.key_params] == ["1:4", "2:4"]
        assert audio.is_srtp
        assert sd.offers_srtp()
        assert sd.offers_srtp(require_all=False)

    def test_crypto_keys_never_reach_a_repr(self) -> None:
        (audio,) = parse_sdp(RFC4568_OFFER).media
        text = repr(audio.crypto)
        assert "WVNfX19z" not in text
        assert "redacted" in text

    def test_crypto_key_param_without_lifetime_or_mki(self) -> None:
        param = KeyParam("inline", "YUJjZGVmZ2hpSktMbW9QUXJzVFVWd3l6MTIzNDU2")
        assert param.key_salt == "YUJjZGVmZ2hpSktMbW9QUXJzVFVWd3l6MTIzNDU2"
        assert param.lifetime is None
        assert param.mki is None
        other = KeyParam("uri", "https://example.com/key")
        assert (other.key_salt, other.lifetime, other.mki) == (None, None, None)

    def test_webrtc_dtls_srtp(self) -> None:
        sd = parse_sdp(WEBRTC_OFFER)
        audio, data = sd.media
        assert sd.connection is None
        assert audio.connection == Connection("IN", "IP4", "0.0.0.0")
        assert audio.proto == "UDP/TLS/RTP/SAVPF"
        assert audio.fingerprint == Fingerprint("sha-256", FP)
        assert audio.setup == "actpass"
        assert audio.rtcp == Rtcp(9, "IN", "IP4", "0.0.0.0")
        assert audio.direction == "sendrecv"
        assert audio.is_rtp
        assert audio.is_srtp
        assert not data.is_rtp
        assert not data.is_srtp
        # The data channel carries no RTP: it neither helps nor hurts.
        assert sd.offers_srtp()
        assert sd.get_attributes("msid-semantic") == [" WMS"]

    def test_session_level_fingerprint_applies_to_media(self) -> None:
        sd = parse_sdp(SESSION_FINGERPRINT_OFFER)
        (audio,) = sd.media
        assert audio.get_attributes("fingerprint") == []
        assert audio.fingerprints == [Fingerprint("sha-256", FP)]
        assert audio.is_srtp
        assert sd.offers_srtp()

    def test_session_and_media_level_connection(self) -> None:
        sd = parse_sdp(SESSION_AND_MEDIA_C)
        audio, video = sd.media
        assert audio.connection is None
        assert audio.effective_connection == Connection("IN", "IP4", "192.0.2.1")
        assert video.connection == Connection("IN", "IP4", "192.0.2.99")
        assert video.effective_connection == video.connection
        assert video.direction == "sendonly"
        assert audio.direction == "sendrecv"

    def test_ipv6(self) -> None:
        sd = parse_sdp(IPV6_OFFER)
        assert sd.connection == Connection("IN", "IP6", "2001:db8::1")
        assert sd.origin is not None
        assert sd.origin.addrtype == "IP6"

    def test_port_zero_and_port_count(self) -> None:
        sd = parse_sdp(PORT_ZERO_AND_COUNT)
        audio, video = sd.media
        assert (audio.port, audio.port_count) == (0, 1)
        assert (video.port, video.port_count) == (49170, 2)
        assert repr(video) == "<MediaDescription video 49170/2 RTP/AVP 31>"

    def test_rfc4475_sdp01(self) -> None:
        assert len(RFC4475_SDP01) == 150  # its Content-Length
        sd = parse_sdp(RFC4475_SDP01)
        assert [(m.media, m.port, m.formats) for m in sd.media] == [
            ("audio", 49217, ("0", "12")),
            ("video", 3227, ("31",)),
        ]
        assert sd.media[1].get_attributes("rtpmap") == ["31 LPC"]

    @pytest.mark.parametrize(
        "data", [RFC4475_MPART01_BODY, RFC4475_MPART01_TEXT, RFC4475_MPART01_BINARY]
    )
    @pytest.mark.parametrize("strict", [True, False])
    def test_rfc4475_mpart01_parts_are_not_sdp(self, data: bytes, strict: bool) -> None:
        with pytest.raises(RemoteProtocolError) as caught:
            parse_sdp(data, strict=strict)
        assert caught.value.rule == sdp_module.RULE_NOT_SDP
        assert caught.value.offset == 0

    def test_pstn_bearer(self) -> None:
        sd = parse_sdp(PSTN_OFFER)
        assert sd.connection == Connection("PSTN", "E164", "+15555550100")
        assert not sd.media[0].is_rtp
        assert not sd.offers_srtp()

    def test_multicast_ttl_and_number(self) -> None:
        data = body(
            "v=0",
            "o=- 1 1 IN IP4 192.0.2.1",
            "s=-",
            "t=0 0",
            "m=audio 5004 RTP/AVP 0",
            "c=IN IP4 233.252.0.1/127/3",
            "m=video 5006 RTP/AVP 31",
            "c=IN IP6 ff15::101/3",
        )
        audio, video = parse_sdp(data).media
        assert audio.connection == Connection("IN", "IP4", "233.252.0.1", 127, 3)
        assert video.connection == Connection("IN", "IP6", "ff15::101", None, 3)

    def test_non_utf8_text_round_trips_and_decodes(self) -> None:
        latin = body(
            "v=0",
            "o=- 1 1 IN IP4 192.0.2.1",
            "s=Caf\xe9 \xff",
            "c=IN IP4 192.0.2.1",
            "t=0 0",
            "a=charset:ISO-8859-1",
        )
        sd = parse_sdp(latin)
        assert sd.serialize() is latin
        assert sd.session_name == "Caf\xe9 \xff"  # the latin-1 view of the bytes
        assert sd.charset == "ISO-8859-1"
        assert sd.decode_text(sd.session_name) == "Café ÿ"
        utf8 = latin.replace(b"Caf\xe9 \xff", "Café".encode()).replace(
            b"a=charset:ISO-8859-1\r\n", b""
        )
        sd = parse_sdp(utf8)
        assert sd.session_name is not None
        assert sd.decode_text(sd.session_name) == "Café"  # RFC 4566 6: UTF-8 default

    @pytest.mark.parametrize("charset", ["no-such-codec", "rot13", "base64", "idna"])
    def test_decode_text_survives_any_charset_name(self, charset: str) -> None:
        data = body(
            "v=0", "o=- 1 1 IN IP4 192.0.2.1", "s=\xff\xfe", "t=0 0", f"a=charset:{charset}"
        )
        sd = parse_sdp(data)
        assert sd.session_name is not None
        assert isinstance(sd.decode_text(sd.session_name), str)


class TestSrtpPolicy:
    @staticmethod
    def offer(*media: str) -> SessionDescription:
        return parse_sdp(
            body("v=0", "o=- 1 1 IN IP4 192.0.2.1", "s=-", "c=IN IP4 192.0.2.1", "t=0 0", *media)
        )

    CRYPTO = "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz"

    def test_any_versus_all(self) -> None:
        sd = self.offer("m=audio 5004 RTP/SAVP 0", self.CRYPTO, "m=video 5006 RTP/AVP 31")
        assert not sd.offers_srtp()
        assert sd.offers_srtp(require_all=False)

    def test_disabled_streams_do_not_count(self) -> None:
        sd = self.offer("m=audio 5004 RTP/SAVP 0", self.CRYPTO, "m=video 0 RTP/AVP 31")
        assert sd.offers_srtp()

    def test_nothing_active_offers_nothing(self) -> None:
        sd = self.offer("m=audio 0 RTP/SAVP 0", self.CRYPTO)
        assert not sd.offers_srtp()
        assert not sd.offers_srtp(require_all=False)

    def test_savp_without_keys_is_not_srtp(self) -> None:
        assert not self.offer("m=audio 5004 RTP/SAVP 0").media[0].is_srtp

    def test_malformed_crypto_is_ignored(self) -> None:
        sd = self.offer("m=audio 5004 RTP/SAVP 0", "a=crypto:x AES_CM_128_HMAC_SHA1_80 nokey")
        assert sd.media[0].crypto == []
        assert not sd.offers_srtp()

    def test_dtls_needs_a_fingerprint(self) -> None:
        sd = self.offer("m=audio 5004 UDP/TLS/RTP/SAVP 0", self.CRYPTO, "a=setup:actpass")
        assert not sd.media[0].is_srtp  # SDES keys do not make DTLS-SRTP
        sd = self.offer("m=audio 5004 UDP/TLS/RTP/SAVP 0", f"a=fingerprint:sha-1 {FP[:59]}")
        assert sd.media[0].is_srtp

    def test_savpf_with_crypto(self) -> None:
        assert self.offer("m=audio 5004 RTP/SAVPF 0", self.CRYPTO).offers_srtp()

    def test_plain_rtp_with_crypto_is_not_srtp(self) -> None:
        assert not self.offer("m=audio 5004 RTP/AVP 0", self.CRYPTO).offers_srtp()

    def test_malformed_fingerprint_is_ignored(self) -> None:
        sd = self.offer("m=audio 5004 UDP/TLS/RTP/SAVP 0", "a=fingerprint:sha-256 not-hex")
        assert sd.media[0].fingerprint is None
        assert not sd.offers_srtp()

    def test_crypto_fields_may_be_separated_by_tabs(self) -> None:
        sd = self.offer("m=audio 5004 RTP/SAVP 0", "a=crypto:1\tAES_CM_128_HMAC_SHA1_32  inline:k")
        assert [c.suite for c in sd.media[0].crypto] == ["AES_CM_128_HMAC_SHA1_32"]
        assert sd.offers_srtp()

    def test_other_unicode_spaces_do_not_separate_crypto_fields(self) -> None:
        # 0x85 and 0xA0 are spaces to Python's str.split(), not to RFC 4568's WSP.
        sd = self.offer(
            "m=audio 5004 RTP/SAVP 0", "a=crypto:1\x85AES_CM_128_HMAC_SHA1_32\xa0inline:k"
        )
        assert sd.media[0].crypto == []
        assert not sd.offers_srtp()

    @pytest.mark.parametrize(
        ("line", "expected"),
        [
            ("a=rtcp:53020", Rtcp(53020)),
            ("a=rtcp:53020 IN IP6 2001:db8::5", Rtcp(53020, "IN", "IP6", "2001:db8::5")),
            ("a=rtcp:70000", None),
            ("a=rtcp:53020 IN IP4", None),
            ("a=rtcp", None),
            ("a=rtcp:", None),
        ],
    )
    def test_rtcp(self, line: str, expected: Rtcp | None) -> None:
        assert self.offer("m=audio 5004 RTP/AVP 0", line).media[0].rtcp == expected

    def test_setup_falls_back_to_the_session(self) -> None:
        data = body(
            "v=0",
            "o=- 1 1 IN IP4 192.0.2.1",
            "s=-",
            "c=IN IP4 192.0.2.1",
            "t=0 0",
            "a=setup:passive",
            "m=audio 5004 UDP/TLS/RTP/SAVP 0",
            "m=video 5006 UDP/TLS/RTP/SAVP 31",
            "a=setup:active",
        )
        audio, video = parse_sdp(data).media
        assert (audio.setup, video.setup) == ("passive", "active")
        assert audio.fingerprint is None

    def test_crypto_helper_parses_all_fields(self) -> None:
        sd = self.offer("m=audio 5004 RTP/SAVP 0", "a=crypto:7 AEAD_AES_256_GCM inline:abc|2^31")
        assert sd.media[0].crypto == [
            Crypto(7, "AEAD_AES_256_GCM", (KeyParam("inline", "abc|2^31"),), ())
        ]


# --- editing ----------------------------------------------------------------------


class TestEditing:
    """Each edit: the output equals the input with exactly the expected lines
    changed, and reparses strictly to the new value."""

    def test_unchanged_serialises_the_same_object(self) -> None:
        sd = parse_sdp(RFC4568_OFFER)
        assert sd.remove_attributes("nonexistent") == 0
        assert sd.serialize() is RFC4568_OFFER

    def test_set_origin(self) -> None:
        sd = parse_sdp(RFC3264_OFFER)
        sd.set_origin(username="sipwarden", address="203.0.113.7", sess_version=2890844527)
        out = sd.serialize()
        assert out == replace_lines(
            RFC3264_OFFER,
            {
                b"o=alice 2890844526 2890844526 IN IP4 host.atlanta.example.com": (
                    b"o=sipwarden 2890844526 2890844527 IN IP4 203.0.113.7"
                )
            },
        )
        assert parse_sdp(out).origin == Origin(
            "sipwarden", "2890844526", "2890844527", "IN", "IP4", "203.0.113.7"
        )

    def test_set_origin_infers_ipv6_and_keeps_other_fields(self) -> None:
        sd = parse_sdp(RFC4475_SDP01)
        sd.set_origin(address="2001:db8::7", sess_id="1")
        assert parse_sdp(sd.serialize()).origin == Origin(
            "mhandley", "1", "7272939", "IN", "IP6", "2001:db8::7"
        )

    def test_set_origin_domain_name_keeps_the_address_type(self) -> None:
        sd = parse_sdp(IPV6_OFFER)
        sd.set_origin(address="gw.example.net")
        assert sd.origin == Origin("-", "1", "1", "IN", "IP6", "gw.example.net")

    def test_set_session_name(self) -> None:
        sd = parse_sdp(RFC4566_EXAMPLE)
        sd.set_session_name("-")
        out = sd.serialize()
        assert out == replace_lines(RFC4566_EXAMPLE, {b"s=SDP Seminar": b"s=-"})
        assert parse_sdp(out).session_name == "-"

    def test_set_session_name_bytes_and_empty(self) -> None:
        sd = parse_sdp(RFC4475_SDP01)
        sd.set_session_name("Gespräch".encode())
        out = sd.serialize()
        assert out == RFC4475_SDP01.replace(b"s=-", "s=Gespräch".encode())
        reparsed = parse_sdp(out)
        assert reparsed.session_name is not None
        assert reparsed.decode_text(reparsed.session_name) == "Gespräch"
        sd.set_session_name("")
        assert b"\r\ns= \r\n" in sd.serialize()  # RFC 4566 5.3: "s= " for no name

    def test_set_connection_address_session_and_media(self) -> None:
        sd = parse_sdp(SESSION_AND_MEDIA_C)
        sd.set_connection_address("203.0.113.7")
        out = sd.serialize()
        assert out == replace_lines(
            SESSION_AND_MEDIA_C,
            {
                b"c=IN IP4 192.0.2.1": b"c=IN IP4 203.0.113.7",
                b"c=IN IP4 192.0.2.99": b"c=IN IP4 203.0.113.7",
            },
        )
        reparsed = parse_sdp(out)
        assert [m.effective_connection for m in reparsed.media] == [
            Connection("IN", "IP4", "203.0.113.7")
        ] * 2
        assert reparsed.media[0].connection is None  # still inherits

    def test_set_connection_address_drops_multicast_ttl(self) -> None:
        sd = parse_sdp(RFC4566_EXAMPLE)
        sd.set_connection_address("192.0.2.50")
        out = sd.serialize()
        assert out == replace_lines(
            RFC4566_EXAMPLE, {b"c=IN IP4 224.2.17.12/127": b"c=IN IP4 192.0.2.50"}
        )
        assert parse_sdp(out).connection == Connection("IN", "IP4", "192.0.2.50")

    def test_set_connection_address_media_level_only_and_ipv6(self) -> None:
        sd = parse_sdp(WEBRTC_OFFER)
        sd.set_connection_address("2001:db8::9")
        out = sd.serialize()
        assert out == WEBRTC_OFFER.replace(b"c=IN IP4 0.0.0.0", b"c=IN IP6 2001:db8::9")
        reparsed = parse_sdp(out)
        assert reparsed.connection is None
        assert {m.connection for m in reparsed.media} == {Connection("IN", "IP6", "2001:db8::9")}

    def test_media_set_connection_address_inserts_in_order(self) -> None:
        sd = parse_sdp(RFC4566_EXAMPLE)
        sd.media[1].set_connection_address("192.0.2.80")
        out = sd.serialize()
        assert out == RFC4566_EXAMPLE.replace(
            b"m=video 51372 RTP/AVP 99\r\n", b"m=video 51372 RTP/AVP 99\r\nc=IN IP4 192.0.2.80\r\n"
        )
        reparsed = parse_sdp(out)
        assert reparsed.media[1].connection == Connection("IN", "IP4", "192.0.2.80")
        assert reparsed.media[0].connection is None

    def test_set_connection_address_adds_media_c_when_none_anywhere(self) -> None:
        data = body("v=0", "o=- 1 1 IN IP4 192.0.2.1", "s=-", "t=0 0", "m=audio 1 RTP/AVP 0")
        sd = parse_sdp(data, strict=False)
        assert any("without c=" in d for d in sd.defects)
        sd.set_connection_address("192.0.2.9")
        reparsed = parse_sdp(sd.serialize())  # strictly valid now
        assert reparsed.media[0].connection == Connection("IN", "IP4", "192.0.2.9")

    def test_set_port(self) -> None:
        sd = parse_sdp(RFC4475_SDP01)
        sd.media[0].set_port(40000)
        out = sd.serialize()
        assert out == RFC4475_SDP01.replace(b"m=audio 49217 ", b"m=audio 40000 ")
        assert [m.port for m in parse_sdp(out).media] == [40000, 3227]

    def test_set_port_keeps_or_changes_the_count(self) -> None:
        sd = parse_sdp(PORT_ZERO_AND_COUNT)
        video = sd.media[1]
        video.set_port(50000)
        assert b"m=video 50000/2 RTP/AVP 31\r\n" in sd.serialize()
        video.set_port(50000, port_count=1)
        out = sd.serialize()
        assert out == PORT_ZERO_AND_COUNT.replace(b"49170/2", b"50000")
        assert parse_sdp(out).media[1].port_count == 1
        video.set_port(0, port_count=3)
        assert parse_sdp(sd.serialize()).media[1].port_count == 3

    def test_set_proto_and_drop_crypto(self) -> None:
        sd = parse_sdp(RFC4568_OFFER)
        audio = sd.media[0]
        audio.set_proto("RTP/AVP")
        assert audio.remove_attributes("crypto") == 2
        out = sd.serialize()
        assert out == b"".join(
            line + b"\r\n"
            for line in RFC4568_OFFER.split(b"\r\n")[:-1]
            if not line.startswith(b"a=crypto")
        ).replace(b"RTP/SAVP", b"RTP/AVP")
        reparsed = parse_sdp(out)
        assert reparsed.media[0].proto == "RTP/AVP"
        assert not reparsed.offers_srtp()

    def test_set_rtcp_replaces(self) -> None:
        sd = parse_sdp(WEBRTC_OFFER)
        sd.media[0].set_rtcp(40001)
        out = sd.serialize()
        assert out == WEBRTC_OFFER.replace(b"a=rtcp:9 IN IP4 0.0.0.0", b"a=rtcp:40001")
        assert parse_sdp(out).media[0].rtcp == Rtcp(40001)

    def test_set_rtcp_with_address_adds(self) -> None:
        sd = parse_sdp(RFC4475_SDP01)
        sd.media[0].set_rtcp(40001, "203.0.113.7")
        out = sd.serialize()
        assert out == RFC4475_SDP01.replace(
            b"RTP/AVP 0 12\r\n", b"RTP/AVP 0 12\r\na=rtcp:40001 IN IP4 203.0.113.7\r\n"
        )
        assert parse_sdp(out).media[0].rtcp == Rtcp(40001, "IN", "IP4", "203.0.113.7")

    def test_replace_attributes(self) -> None:
        sd = parse_sdp(RFC4568_OFFER)
        new_key = "1 AES_CM_128_HMAC_SHA1_80 inline:QUJjZGVmMTIzNDU2Nzg5QUJDREUwMTIzNDU2Nzg5"
        sd.media[0].replace_attributes("crypto", [new_key])
        out = sd.serialize()
        lines = RFC4568_OFFER.split(b"\r\n")
        assert out.split(b"\r\n") == [*lines[:9], b"a=crypto:" + new_key.encode(), b""]
        assert parse_sdp(out).media[0].get_attributes("crypto") == [new_key]

    def test_replace_attributes_keeps_position_and_flags(self) -> None:
        sd = parse_sdp(WEBRTC_OFFER)
        sd.media[0].replace_attributes("rtcp-mux", [None, "x"])
        out = sd.serialize()
        assert out == WEBRTC_OFFER.replace(b"a=rtcp-mux\r\n", b"a=rtcp-mux\r\na=rtcp-mux:x\r\n")
        sd.media[0].replace_attributes("rtcp-mux", [])
        assert b"rtcp-mux" not in sd.serialize()

    def test_add_attribute_at_session_level_goes_before_media(self) -> None:
        sd = parse_sdp(RFC4475_SDP01)
        sd.add_attribute("tool", "sipwarden")
        out = sd.serialize()
        assert out == RFC4475_SDP01.replace(b"t=0 0\r\n", b"t=0 0\r\na=tool:sipwarden\r\n")
        assert parse_sdp(out).get_attributes("tool") == ["sipwarden"]

    def test_set_direction(self) -> None:
        sd = parse_sdp(SESSION_AND_MEDIA_C)
        sd.media[1].set_direction("inactive")
        sd.media[0].set_direction("recvonly")
        out = sd.serialize()
        assert out == SESSION_AND_MEDIA_C.replace(b"a=sendonly", b"a=inactive").replace(
            b"PCMU/8000\r\n", b"PCMU/8000\r\na=recvonly\r\n"
        )
        reparsed = parse_sdp(out)
        assert [m.direction for m in reparsed.media] == ["recvonly", "inactive"]

    def test_set_session_direction(self) -> None:
        sd = parse_sdp(RFC4566_EXAMPLE)
        sd.set_direction("sendonly")
        out = sd.serialize()
        assert out == RFC4566_EXAMPLE.replace(b"a=recvonly", b"a=sendonly")
        assert [m.direction for m in parse_sdp(out).media] == ["sendonly", "sendonly"]

    def test_remove_fields(self) -> None:
        sd = parse_sdp(RFC4566_EXAMPLE)
        assert sd.remove_fields("iuep") == 3
        out = sd.serialize()
        assert out == replace_lines(
            RFC4566_EXAMPLE,
            {
                b"i=A Seminar on the session description protocol": None,
                b"u=http://www.example.com/seminars/sdp.pdf": None,
                b"e=j.doe@example.com (Jane Doe)": None,
            },
        )
        parse_sdp(out)
        assert sd.media[0].remove_fields("b") == 0

    def test_remove_attributes_everywhere(self) -> None:
        sd = parse_sdp(WEBRTC_OFFER)
        assert sd.remove_attributes_everywhere("ice-pwd") == 2
        assert b"ice-pwd" not in sd.serialize()

    def test_edit_after_an_unterminated_last_line(self) -> None:
        data = RFC4475_SDP01[:-2]
        sd = parse_sdp(data)
        sd.media[1].add_attribute("sendonly")
        out = sd.serialize()
        assert out == RFC4475_SDP01 + b"a=sendonly\r\n"

    def test_edits_of_a_lf_body_use_lf(self) -> None:
        data = with_eol(RFC4475_SDP01, b"\n")
        sd = parse_sdp(data)
        sd.media[0].add_attribute("ptime", "20")
        assert sd.serialize() == data.replace(b"0 12\n", b"0 12\na=ptime:20\n")

    def test_every_edit_keeps_a_strict_description_strict(self) -> None:
        for data in SAMPLES.values():
            sd = parse_sdp(data)
            edit_everything(sd)
            out = sd.serialize()
            reparsed = parse_sdp(out)
            assert reparsed.serialize() == out
            assert all(m.port == 40000 for m in reparsed.media)
            assert all(m.rtcp == Rtcp(40001) for m in reparsed.media)

    @pytest.mark.parametrize(
        ("edit", "why"),
        [
            (lambda sd: sd.set_session_name("x\r\nm=audio 1 RTP/AVP 0"), "CR"),
            (lambda sd: sd.set_session_name(b"x\nm=audio 1 RTP/AVP 0"), "LF"),
            (lambda sd: sd.set_session_name("Ω"), "above U+00FF"),
            (lambda sd: sd.add_attribute("x", "a\x00b"), "NUL"),
            (lambda sd: sd.add_attribute("bad name"), "token"),
            (lambda sd: sd.replace_attributes("x:y", ["1"]), "token"),
            (lambda sd: sd.media[0].set_port(70000), "0-65535"),
            (lambda sd: sd.media[0].set_port(-1), "0-65535"),
            (lambda sd: sd.media[0].set_port(True), "0-65535"),
            (lambda sd: sd.media[0].set_port(1, port_count=0), "1-65535"),
            (lambda sd: sd.media[0].set_proto("RTP AVP"), "proto"),
            (lambda sd: sd.media[0].set_rtcp(1, "999.1.1.1"), "cannot write"),
            (lambda sd: sd.media[0].set_direction("sideways"), "direction"),
            (lambda sd: sd.set_origin(username="a b"), "non-ws-string"),
            (lambda sd: sd.set_origin(sess_id="12a"), "DIGIT"),
            (lambda sd: sd.set_origin(sess_version=True), "DIGIT"),
            (lambda sd: sd.set_origin(address="1.2.3.4", addrtype="IP6"), "cannot write"),
            (lambda sd: sd.set_connection_address("not an address!"), "cannot write"),
            (lambda sd: sd.set_connection_address("224.0.0.1/4"), "cannot write"),
            (lambda sd: sd.set_connection_address("1.2.3.4", "PSTN"), "cannot write"),
            (lambda sd: sd.remove_fields("c"), "optional"),
            (lambda sd: sd.media[0].remove_fields("a"), "optional"),
        ],
    )
    def test_misuse_is_refused(self, edit: object, why: str) -> None:
        sd = parse_sdp(RFC4475_SDP01)
        assert callable(edit)
        with pytest.raises(LocalProtocolError, match=re.escape(why)):
            edit(sd)
        assert sd.serialize() is RFC4475_SDP01

    def test_set_origin_without_origin_is_refused(self) -> None:
        sd = parse_sdp(body("v=0", "s=-", "t=0 0"), strict=False)
        with pytest.raises(LocalProtocolError):
            sd.set_origin(username="x")


# --- strictness -------------------------------------------------------------------

BASE = [
    "v=0",
    "o=- 1 1 IN IP4 192.0.2.1",
    "s=-",
    "c=IN IP4 192.0.2.1",
    "t=0 0",
    "m=audio 5004 RTP/AVP 0",
    "a=rtpmap:0 PCMU/8000",
]


def base_with(index: int, line: str | None, *, insert: bool = False) -> bytes:
    """BASE with line ``index`` replaced (or, with ``insert``, a line put before it)."""
    lines: list[str] = list(BASE)
    if insert:
        assert line is not None
        lines.insert(index, line)
    elif line is None:
        del lines[index]
    else:
        lines[index] = line
    return body(*lines)


# (id, body, rule, offset: the byte the error names)
REJECTIONS: list[tuple[str, bytes, str, int]] = []


def rejection(
    name: str, data: bytes, rule: str, marker: bytes | None, delta: int = 0, *, last: bool = False
) -> None:
    """Record a body strict parsing rejects, the error pointing at ``marker`` (+``delta``)."""
    if marker is None:
        offset = len(data)  # something is missing: the error points at the end
    else:
        offset = (data.rindex(marker) if last else data.index(marker)) + delta
    REJECTIONS.append((name, data, rule, offset))


R = sdp_module
rejection("first line not v=", base_with(0, None), R.RULE_V, b"o=")
rejection("version 1", base_with(0, "v=1"), R.RULE_V, b"1", 0)
rejection("not type=value", base_with(3, "hello", insert=True), R.RULE_LINE, b"hello")
rejection("upper-case type", base_with(6, "A=foo"), R.RULE_LINE, b"A=foo")
rejection("space before =", base_with(6, "a =foo"), R.RULE_LINE, b"a =foo")
rejection("leading space", base_with(6, " a=foo"), R.RULE_LINE, b" a=foo")
rejection("blank line inside", base_with(3, "", insert=True), R.RULE_LINE, b"\r\n\r\n", 2)
rejection("unknown type", base_with(6, "x=foo"), R.RULE_TYPE, b"x=foo")
rejection("NUL", base_with(6, "a=fo\x00o"), R.RULE_BYTES, b"\x00")
rejection("stray CR", base_with(6, "a=fo\ro"), R.RULE_BYTES, b"\ro")
rejection("attribute name", base_with(6, "a=fo o:1"), R.RULE_A, b"fo o")
rejection("empty attribute", base_with(6, "a="), R.RULE_A, b"a=\r", 2)
rejection("m= port not a number", base_with(5, "m=audio abc RTP/AVP 0"), R.RULE_M, b"audio")
rejection("m= port range", base_with(5, "m=audio 65536 RTP/AVP 0"), R.RULE_M, b"audio")
rejection("m= port huge", base_with(5, "m=audio " + "9" * 5000 + " RTP/AVP 0"), R.RULE_M, b"audio")
rejection("m= count 0", base_with(5, "m=audio 5004/0 RTP/AVP 0"), R.RULE_M, b"audio")
rejection("m= no format", base_with(5, "m=audio 5004 RTP/AVP"), R.RULE_M, b"audio")
rejection("m= two spaces", base_with(5, "m=audio  5004 RTP/AVP 0"), R.RULE_M, b"audio")
rejection("no o=", base_with(1, None), R.RULE_O, None)
rejection("o= five fields", base_with(1, "o=- 1 IN IP4 192.0.2.1"), R.RULE_O, b"- 1 IN")
rejection("o= sess-id", base_with(1, "o=- x1 1 IN IP4 192.0.2.1"), R.RULE_O, b"- x1")
rejection("o= address", base_with(1, "o=- 1 1 IN IP4 192.0.2.300"), R.RULE_O, b"- 1 1")
rejection("no s=", base_with(2, None), R.RULE_S, None)
rejection("no t=", base_with(4, None), R.RULE_T, None)
rejection("t= not numbers", base_with(4, "t=now later"), R.RULE_T, b"now")
rejection("b= form", base_with(4, "b=AS", insert=True), R.RULE_B, b"AS")
rejection("c= nettype", base_with(3, "c=XX IP4 192.0.2.1"), R.RULE_C, b"XX")
rejection("c= addrtype", base_with(3, "c=IN IP5 192.0.2.1"), R.RULE_C, b"IN IP5")
rejection("c= IP4 out of range", base_with(3, "c=IN IP4 300.1.1.1"), R.RULE_C, b"IN IP4 300")
rejection("c= IP4 leading zero", base_with(3, "c=IN IP4 010.1.1.1"), R.RULE_C, b"IN IP4 010")
rejection("c= IPv6 as IP4", base_with(3, "c=IN IP4 2001:db8::1"), R.RULE_C, b"IN IP4 2001")
rejection("c= IPv4 as IP6", base_with(3, "c=IN IP6 192.0.2.1"), R.RULE_C, b"IN IP6")
rejection("c= IPv6 zone", base_with(3, "c=IN IP6 fe80::1%eth0"), R.RULE_C, b"IN IP6")
rejection("c= two fields", base_with(3, "c=IN 192.0.2.1"), R.RULE_C, b"IN 192")
rejection("c= multicast no ttl", base_with(3, "c=IN IP4 224.2.1.1"), R.RULE_C, b"IN IP4 224")
rejection("c= ttl on unicast", base_with(3, "c=IN IP4 10.0.0.1/127"), R.RULE_C, b"IN IP4 10.")
rejection("c= ttl range", base_with(3, "c=IN IP4 224.2.1.1/256"), R.RULE_C, b"IN IP4 224")
rejection("c= IPv6 ttl", base_with(3, "c=IN IP6 ff15::101/3/2"), R.RULE_C, b"IN IP6")
rejection("no c= anywhere", base_with(3, None), R.RULE_C, b"m=audio")
rejection("order: a= before t=", base_with(4, "a=sendrecv", insert=True), R.RULE_ORDER, b"t=0")
rejection("order: two s=", base_with(3, "s=again", insert=True), R.RULE_ORDER, b"s=again")
rejection("order: t= in media", base_with(7, "t=0 0", insert=True), R.RULE_ORDER, b"t=", last=True)
rejection("order: r= without t=", base_with(4, "r=7d 1h 0 25h", insert=True), R.RULE_ORDER, b"r=")
rejection(
    "order: c= after a= in media",
    body(*BASE[:3], *BASE[4:], "c=IN IP4 192.0.2.1"),
    R.RULE_ORDER,
    b"c=IN",
)


class TestStrict:
    @pytest.mark.parametrize(
        ("data", "rule", "offset"),
        [pytest.param(d, r, o, id=name) for name, d, r, o in REJECTIONS],
    )
    def test_rejects(self, data: bytes, rule: str, offset: int) -> None:
        with pytest.raises(RemoteProtocolError) as caught:
            parse_sdp(data)
        assert caught.value.rule == rule
        assert caught.value.offset == offset
        assert caught.value.status_hint == 400

    @pytest.mark.parametrize(
        ("data", "rule", "offset"),
        [pytest.param(d, r, o, id=name) for name, d, r, o in REJECTIONS],
    )
    def test_lenient_recovers(self, data: bytes, rule: str, offset: int) -> None:
        sd = parse_sdp(data, strict=False)
        assert any(d.endswith(f"at byte {offset} (rule: {rule})") for d in sd.defects), sd.defects
        assert sd.serialize() is data
        sd._dirty = True
        assert sd.serialize() == data
        exercise(sd)
        edit_everything(sd)
        assert isinstance(sd.serialize(), bytes)

    def test_rules_cite_rfc_sections(self) -> None:
        assert R.RULE_C == "RFC 4566 5.7 c="
        assert R.RULE_M == "RFC 4566 5.14 m="

    @pytest.mark.parametrize("strict", [True, False])
    def test_max_lines(self, strict: bool) -> None:
        data = body(*BASE, *["a=x"] * 20)
        parse_sdp(data, max_lines=len(BASE) + 20, strict=strict)
        with pytest.raises(RemoteProtocolError) as caught:
            parse_sdp(data, max_lines=len(BASE) + 19, strict=strict)
        assert caught.value.rule == "max_lines"
        assert caught.value.offset == data.rindex(b"a=x")

    def test_max_lines_counts_an_unterminated_last_line(self) -> None:
        data = body(*BASE, final=False)
        parse_sdp(data, max_lines=len(BASE))
        with pytest.raises(RemoteProtocolError):
            parse_sdp(data, max_lines=len(BASE) - 1)

    @pytest.mark.parametrize(
        "data",
        [
            b"",
            b"\r\n",
            b"\n\n\n",
            b"hello world",
            b"<html><body>v=0</body></html>",
            b'{"v": 0}',
            b"V=0\r\no=- 1 1 IN IP4 192.0.2.1\r\n",
            b"x=0\r\n",
            b"\xff\xfe\x00\x00",
            b"=0\r\n",
        ],
    )
    @pytest.mark.parametrize("strict", [True, False])
    def test_not_sdp_at_all(self, data: bytes, strict: bool) -> None:
        with pytest.raises(RemoteProtocolError) as caught:
            parse_sdp(data, strict=strict)
        assert caught.value.rule == R.RULE_NOT_SDP

    def test_blank_lines_after_the_last_record_are_tolerated(self) -> None:
        data = RFC4475_SDP01 + b"\r\n\r\n"
        sd = parse_sdp(data)
        assert sd.serialize() is data
        assert len(sd.defects) == 1
        assert "blank lines" in sd.defects[0]
        sd.media[1].add_attribute("sendonly")
        assert sd.serialize() == RFC4475_SDP01 + b"a=sendonly\r\n\r\n\r\n"

    def test_lenient_keeps_bad_lines_and_reads_what_it_can(self) -> None:
        data = body(
            "v=0",
            "o=- 1 1 IN IP4 192.0.2.1",
            "s=-",
            "junk",
            "c=IN IP4 999.0.0.1",
            "t=0 0",
            "y=unknown",
            "m=audio abc RTP/AVP 0",
            "a=rtpmap:0 PCMU/8000",
            "m=video 5006 RTP/AVP 31",
        )
        sd = parse_sdp(data, strict=False)
        assert sd.serialize() is data
        assert len(sd.defects) == 4
        assert sd.connection == Connection("IN", "IP4", "999.0.0.1")
        audio, video = sd.media
        assert audio.port == 0  # unreadable: taken as not active
        assert audio.formats == ("0",)
        assert audio.attributes == [Attribute("rtpmap", "0 PCMU/8000")]
        assert sd.attributes == []  # the opaque lines are not attributes
        assert video.port == 5006
        assert video.effective_connection == sd.connection

    def test_lenient_version_and_missing_fields(self) -> None:
        sd = parse_sdp(b"v=2\r\nm=audio 1 RTP/AVP 0\r\n", strict=False)
        assert sd.version == 2
        assert sd.origin is None
        assert sd.session_name is None
        assert {d.rsplit("rule: ", 1)[1] for d in sd.defects} >= {
            "RFC 4566 5.1 v=)",
            "RFC 4566 5.2 o=)",
            "RFC 4566 5.3 s=)",
            "RFC 4566 5.9 t=)",
        }

    def test_lenient_reports_every_order_problem(self) -> None:
        data = body(*BASE[:4], "a=x", "b=AS:1", "t=0 0", *BASE[5:], "b=AS:2")
        sd = parse_sdp(data, strict=False)
        assert [d.rsplit("rule: ", 1)[1] for d in sd.defects] == ["RFC 4566 5 field order)"] * 3


# --- properties (hypothesis) -------------------------------------------------------

TOKEN_CHARS = "!#$%&'*+-.0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ^_`abcdefghijklmnopqrstuvwxyz{|}~"
tokens = st.text(TOKEN_CHARS, min_size=1, max_size=8)
# byte-string: any byte but NUL, CR, LF (here as latin-1 views)
texts = st.text(
    st.characters(min_codepoint=1, max_codepoint=255, exclude_characters="\r\n"),
    min_size=1,
    max_size=16,
)
ipv4_unicast = (
    st.ip_addresses(v=4).map(str).filter(lambda a: not 224 <= int(a.split(".")[0]) <= 239)
)
addresses = st.one_of(
    st.tuples(st.just("IP4"), ipv4_unicast),
    st.tuples(st.just("IP6"), st.ip_addresses(v=6).map(str)),
    st.tuples(
        st.sampled_from(["IP4", "IP6"]),
        st.from_regex(r"[a-z][a-z0-9\-]{0,6}[a-z0-9](\.[a-z]{2,5}){1,2}", fullmatch=True),
    ),
)
attributes = st.lists(st.tuples(tokens, st.none() | texts), max_size=4)


@st.composite
def media_descriptions(draw: st.DrawFn, need_c: bool) -> tuple[list[str], dict[str, object]]:
    kind = draw(tokens)
    port = draw(st.integers(0, 65535))
    count = draw(st.none() | st.integers(2, 8))
    proto = "/".join(draw(st.lists(tokens, min_size=1, max_size=4)))
    formats = draw(st.lists(tokens, min_size=1, max_size=5))
    lines = [f"m={kind} {port}{'' if count is None else f'/{count}'} {proto} {' '.join(formats)}"]
    connection = None
    if need_c or draw(st.booleans()):
        addrtype, address = draw(addresses)
        lines.append(f"c=IN {addrtype} {address}")
        connection = Connection("IN", addrtype, address)
    if draw(st.booleans()):
        lines.append(f"b=AS:{draw(st.integers(0, 10**6))}")
    attrs = draw(attributes)
    lines += [f"a={n}" if v is None else f"a={n}:{v}" for n, v in attrs]
    expected = {
        "media": kind,
        "port": port,
        "port_count": count or 1,
        "proto": proto,
        "formats": tuple(formats),
        "connection": connection,
        "attributes": [Attribute(n, v) for n, v in attrs],
    }
    return lines, expected


@st.composite
def descriptions(draw: st.DrawFn) -> tuple[bytes, dict[str, object]]:
    username = draw(st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1))
    sess_id = str(draw(st.integers(0, 2**70)))
    sess_version = str(draw(st.integers(0, 2**70)))
    o_type, o_address = draw(addresses)
    name = draw(texts)
    lines = ["v=0", f"o={username} {sess_id} {sess_version} IN {o_type} {o_address}", f"s={name}"]
    if draw(st.booleans()):
        lines.append(f"i={draw(texts)}")
    session_c = None
    if draw(st.booleans()):
        c_type, c_address = draw(addresses)
        lines.append(f"c=IN {c_type} {c_address}")
        session_c = Connection("IN", c_type, c_address)
    lines.append(f"t={draw(st.integers(0, 2**40))} {draw(st.integers(0, 2**40))}")
    session_attrs = draw(attributes)
    lines += [f"a={n}" if v is None else f"a={n}:{v}" for n, v in session_attrs]
    media = draw(st.lists(media_descriptions(need_c=session_c is None), max_size=3))
    for media_lines, _ in media:
        lines += media_lines
    eol = draw(st.sampled_from(["\r\n", "\n", "mixed"]))
    eols = [draw(st.sampled_from(["\r\n", "\n"])) if eol == "mixed" else eol for _ in lines]
    if not draw(st.booleans()):
        eols[-1] = ""  # no line end after the last record
    data = "".join(line + end for line, end in zip(lines, eols, strict=True)).encode("latin-1")
    expected: dict[str, object] = {
        "origin": Origin(username, sess_id, sess_version, "IN", o_type, o_address),
        "session_name": name,
        "connection": session_c,
        "attributes": [Attribute(n, v) for n, v in session_attrs],
        "media": [m for _, m in media],
    }
    return data, expected


# Pieces that make SDP-like input reach deep into the parser when shuffled.
SDP_PIECES = [
    b"v=0", b"o=- 1 1 IN IP4 192.0.2.1", b"s=-", b"s=", b"c=IN IP4 192.0.2.1",
    b"c=IN IP6 ::1", b"c=IN IP4 224.0.0.1/3/2", b"c=IN IP6 ff02::1/2", b"t=0 0",
    b"r=1 2 3", b"b=AS:1", b"m=audio 1 RTP/SAVP 0", b"m=video 0/2 UDP/TLS/RTP/SAVPF 9",
    b"a=crypto:1 X inline:k|2^20|1:4", b"a=fingerprint:sha-256 AB:CD", b"a=rtcp:9",
    b"a=rtcp:9 IN IP4 1.1.1.1", b"a=setup:active", b"a=inactive", b"a=charset:latin1",
    b"a=", b"k=x", b"z=1 2", b"i=\xff", b"x=1", b"=", b" ", b"/", b":", b"\r\n", b"\n",
    b"\r", b"\x00", b"\xff", b"9" * 6,
]  # fmt: skip

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class TestProperties:
    @FAST
    @given(descriptions())
    def test_generated_descriptions_round_trip(
        self, generated: tuple[bytes, dict[str, object]]
    ) -> None:
        data, expected = generated
        sd = parse_sdp(data)
        assert sd.serialize() is data
        sd._dirty = True
        assert sd.serialize() == data
        assert sd.version == 0
        assert sd.origin == expected["origin"]
        assert sd.session_name == expected["session_name"]
        assert sd.connection == expected["connection"]
        assert sd.attributes == expected["attributes"]
        media = expected["media"]
        assert isinstance(media, list)
        assert len(sd.media) == len(media)
        for got, want in zip(sd.media, media, strict=True):
            assert isinstance(got, MediaDescription)
            assert {key: getattr(got, key) for key in want} == want
        exercise(sd)

    @FAST
    @given(descriptions(), st.integers(0, 65535), addresses)
    def test_edits_reparse_strictly(
        self,
        generated: tuple[bytes, dict[str, object]],
        port: int,
        address: tuple[str, str],
    ) -> None:
        data, _ = generated
        sd = parse_sdp(data)
        before = [(m.media, m.proto, m.formats, m.attributes) for m in sd.media]
        sd.set_origin(address=address[1], addrtype=address[0], username="gw")
        sd.set_connection_address(address[1], address[0])
        for media in sd.media:
            media.set_port(port)
        out = sd.serialize()
        reparsed = parse_sdp(out)
        assert reparsed.origin is not None
        assert (reparsed.origin.username, reparsed.origin.address) == ("gw", address[1])
        wanted = Connection("IN", address[0], address[1])
        for media in reparsed.media:
            assert media.port == port
            assert media.effective_connection == wanted
        assert [(m.media, m.proto, m.formats, m.attributes) for m in reparsed.media] == before

    @FAST
    @given(st.binary(max_size=300), st.booleans())
    def test_arbitrary_bytes_only_raise_remote_protocol_error(
        self, data: bytes, strict: bool
    ) -> None:
        check_any_input(data, strict)

    @FAST
    @given(st.lists(st.sampled_from(SDP_PIECES), max_size=25).map(b"".join), st.booleans())
    def test_sdp_like_bytes_only_raise_remote_protocol_error(
        self, data: bytes, strict: bool
    ) -> None:
        check_any_input(data, strict)

    @FAST
    @given(
        descriptions(),
        st.lists(
            st.tuples(
                st.integers(0, 10_000),
                st.sampled_from(["flip", "insert", "delete"]),
                st.binary(min_size=1, max_size=3),
            ),
            min_size=1,
            max_size=4,
        ),
        st.booleans(),
    )
    def test_mutated_descriptions_only_raise_remote_protocol_error(
        self,
        generated: tuple[bytes, dict[str, object]],
        mutations: list[tuple[int, str, bytes]],
        strict: bool,
    ) -> None:
        data = bytearray(generated[0])
        for position, operation, chunk in mutations:
            where = position % (len(data) + 1)
            if operation == "insert":
                data[where:where] = chunk
            elif operation == "delete":
                del data[where : where + len(chunk)]
            elif where < len(data):
                data[where] = chunk[0]
        check_any_input(bytes(data), strict)


def check_any_input(data: bytes, strict: bool) -> None:
    """The fuzz invariant: parse or raise RemoteProtocolError; what parses round-trips."""
    try:
        sd = parse_sdp(data, strict=strict)
    except RemoteProtocolError as error:
        offset = error.offset
        sd = None
    if sd is None:
        assert offset is not None
        assert 0 <= offset <= len(data)
        return
    assert sd.serialize() == data
    exercise(sd)
    edit_everything(sd)
    out = sd.serialize()
    assert isinstance(out, bytes)
    if strict:
        # Edits of a strictly valid description keep it strictly valid.
        parse_sdp(out)
