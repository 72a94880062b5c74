# cython: language_level=3
"""SIP datagrams in and out in batches: one ``recvmmsg`` for up to 64 datagrams waiting on the socket,
and one ``sendmmsg`` for every datagram a turn of the event loop made.

``recv_batch(fd, family, peers)`` reads what waits (up to 64 datagrams, without blocking): a list of
``(data, peer)``, ``peer`` a ``core.sip.addr.Peer`` taken from ``peers`` (a dict the caller keeps, by the
sender's raw address) or made once and put there. An ICMP error queued on the socket for an earlier
send (a phone gone away) is skipped: it says nothing of what waits to be read. On a socket given to
``stamp_arrivals(fd)``, ``first_stamp()`` is when the first datagram of the last read arrived
(``SO_TIMESTAMPNS``), so the caller knows how long the oldest of them waited.

A datagram sent on loopback or a LAN delivers itself to the receiver's socket inside the send and, when
the receiving process sleeps, wakes it: a send that wakes a sleeping peer costs about three times one
that finds it awake. A node answering a burst of requests one ``sendto`` at a time pays that for
nearly every datagram; a batch pays it once per peer, and one system call instead of one a datagram.

``send_batch(fd, family, items)`` sends ``items`` (``(data, peer)`` pairs, ``peer`` a ``core.sip.addr.Peer``)
from the UDP socket ``fd`` and hands back what the kernel had no room for (EAGAIN: everything from the
first such datagram on, for the caller to send once the socket is writable). A datagram whose host is
not a numeric address of the socket's family is dropped and counted in ``unaddressable``: names are
not resolved on the send path, which must not wait for DNS. A datagram the kernel refuses for itself
(too large, a route missing) is dropped, as ``sendto`` would have lost it, and counted in ``dropped``.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Malloc
from libc.errno cimport EAGAIN, EINTR, ENOBUFS, errno
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t
from libc.string cimport memcpy, memset
from posix.time cimport timespec
from posix.uio cimport iovec

from core.sip.addr import Peer


# The socket calls and structures the media engine declares already (core/_rtp.pxd), and IPv6's.
from core._rtp cimport (AF_INET, MSG_DONTWAIT, htons, in_addr, inet_ntop, inet_pton, mmsghdr, msghdr, ntohs,
                        recvmmsg, sendmmsg, setsockopt, sockaddr_in)


cdef extern from "<sys/socket.h>" nogil:
    enum: AF_INET6
    enum: SOL_SOCKET
    enum: SO_TIMESTAMPNS
    cdef struct cmsghdr:
        size_t cmsg_len
        int cmsg_level
        int cmsg_type
    cmsghdr *CMSG_FIRSTHDR(msghdr *)
    cmsghdr *CMSG_NXTHDR(msghdr *, cmsghdr *)
    unsigned char *CMSG_DATA(cmsghdr *)


cdef extern from "<netinet/in.h>" nogil:
    cdef struct in6_addr:
        uint8_t s6_addr[16]
    cdef struct sockaddr_in6:
        unsigned short sin6_family
        uint16_t sin6_port
        uint32_t sin6_flowinfo
        in6_addr sin6_addr
        uint32_t sin6_scope_id


cdef enum:
    BATCH = 64  # datagrams a sendmmsg call

cdef mmsghdr _msgs[BATCH]
cdef iovec _iov[BATCH]
cdef sockaddr_in6 _addrs[BATCH]  # large enough for either family
cdef Py_ssize_t _index[BATCH]  # the item each message of the batch sends

# Bound on the per-host and per-sender caches below (emptied when full).
cdef Py_ssize_t PACKED_MAX = 8192

cdef enum:
    RECV_BATCH = 64  # datagrams a recvmmsg call
    DATAGRAM_MAX = 65536  # a UDP datagram's payload is at most 65,507 bytes

cdef mmsghdr _rmsgs[RECV_BATCH]
cdef iovec _riov[RECV_BATCH]
cdef sockaddr_in6 _raddrs[RECV_BATCH]
cdef char *_rbuf = NULL  # RECV_BATCH buffers of DATAGRAM_MAX bytes, made on first use

# Errors a UDP socket reports on a read for an earlier send's ICMP answer, not for this read.
cdef extern from "<errno.h>":
    enum: ECONNREFUSED
    enum: EHOSTUNREACH
    enum: ENETUNREACH
    enum: EHOSTDOWN
    enum: ENETDOWN


cdef object _peer_of(dict peers, sockaddr_in6 *addr, int family):
    """The Peer of a sender, from ``peers`` by its raw address (port and address bytes)."""
    cdef char text[64]
    cdef sockaddr_in *a4
    cdef int port
    if family == AF_INET:
        a4 = <sockaddr_in *>addr
        key = (<char *>&a4.sin_port)[:6]  # sin_port then sin_addr, contiguous
    else:
        key = (<char *>&addr.sin6_port)[:2] + (<char *>&addr.sin6_addr)[:16]
    peer = peers.get(key)
    if peer is None:
        if family == AF_INET:
            inet_ntop(AF_INET, &a4.sin_addr, text, sizeof(text))
            port = ntohs(a4.sin_port)
        else:
            inet_ntop(AF_INET6, &addr.sin6_addr, text, sizeof(text))
            port = ntohs(addr.sin6_port)
        if len(peers) >= PACKED_MAX:
            peers.clear()
        peer = peers[key] = Peer("udp", text.decode("ascii"), port)
    return peer


cdef char _rcontrol[64]  # the first datagram's ancillary data: its arrival time (SO_TIMESTAMPNS)
cdef int64_t _first_stamp = 0


def stamp_arrivals(int fd) -> None:
    """Have the kernel note each datagram's arrival time on the socket ``fd`` (``SO_TIMESTAMPNS``), for
    ``first_stamp``."""
    cdef int on = 1
    if setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &on, sizeof(on)) != 0:
        raise OSError(errno, "setsockopt(SO_TIMESTAMPNS)")


def first_stamp() -> int:
    """When the kernel received the first datagram of the last ``recv_batch``, in nanoseconds of the
    real-time clock (``time.time_ns()``); 0 when that batch was empty or the socket does not have
    ``SO_TIMESTAMPNS`` set."""
    return _first_stamp


cdef int64_t _stamp_of(msghdr *hdr) noexcept:
    cdef cmsghdr *c = CMSG_FIRSTHDR(hdr)
    cdef timespec ts
    while c != NULL:
        if c.cmsg_level == SOL_SOCKET and c.cmsg_type == SO_TIMESTAMPNS:
            memcpy(&ts, CMSG_DATA(c), sizeof(timespec))
            return <int64_t>ts.tv_sec * 1000000000 + ts.tv_nsec
        c = CMSG_NXTHDR(hdr, c)
    return 0


def recv_batch(int fd, int family, dict peers):
    """What waits on ``fd``, up to 64 datagrams, as ``(data, peer)`` pairs (see the module doc)."""
    global _rbuf, _first_stamp
    cdef int r, i, tries = 0
    cdef list out = []
    if _rbuf == NULL:
        _rbuf = <char *>PyMem_Malloc(RECV_BATCH * DATAGRAM_MAX)
        if _rbuf == NULL:
            raise MemoryError()
    for i in range(RECV_BATCH):
        _riov[i].iov_base = _rbuf + i * DATAGRAM_MAX
        _riov[i].iov_len = DATAGRAM_MAX
        _rmsgs[i].msg_hdr.msg_name = &_raddrs[i]
        _rmsgs[i].msg_hdr.msg_namelen = sizeof(sockaddr_in6)
        _rmsgs[i].msg_hdr.msg_iov = &_riov[i]
        _rmsgs[i].msg_hdr.msg_iovlen = 1
        _rmsgs[i].msg_hdr.msg_control = NULL
        _rmsgs[i].msg_hdr.msg_controllen = 0
        _rmsgs[i].msg_hdr.msg_flags = 0
    _rmsgs[0].msg_hdr.msg_control = _rcontrol  # the oldest datagram's arrival time is enough
    _rmsgs[0].msg_hdr.msg_controllen = sizeof(_rcontrol)
    _first_stamp = 0
    while True:
        r = recvmmsg(fd, _rmsgs, RECV_BATCH, MSG_DONTWAIT, NULL)
        if r >= 0:
            break
        if errno == EAGAIN or tries >= RECV_BATCH:
            return out
        if errno != EINTR and errno != ECONNREFUSED and errno != EHOSTUNREACH and errno != ENETUNREACH \
                and errno != EHOSTDOWN and errno != ENETDOWN:
            raise OSError(errno, "recvmmsg")
        tries += 1  # an earlier send's ICMP error, reported on this read: read again
    if r > 0:
        _first_stamp = _stamp_of(&_rmsgs[0].msg_hdr)
    for i in range(r):
        out.append((PyBytes_FromStringAndSize(<char *>_riov[i].iov_base, _rmsgs[i].msg_len),
                    _peer_of(peers, &_raddrs[i], family)))
    return out


# host -> its packed address (4 or 16 bytes), or b"" when it is not a numeric address of that family;
# per family. A node talks to the same trunks and phones datagram after datagram. Bounded.
cdef dict _packed = {AF_INET: {}, AF_INET6: {}}

dropped = 0  # datagrams the kernel refused (see the module doc)
unaddressable = 0  # datagrams to a host that is not a numeric address of the socket's family


cdef bytes _pack(int family, str host):
    cdef dict known = _packed[family]
    cdef bytes packed = known.get(host)
    cdef in6_addr buf
    if packed is None:
        if len(known) >= PACKED_MAX:
            known.clear()
        raw = host.encode("ascii", "replace")
        if inet_pton(family, raw, &buf) == 1:
            packed = (<char *>&buf)[:4 if family == AF_INET else 16]
        else:
            packed = b""
        known[host] = packed
    return packed


def send_batch(int fd, int family, list items):
    """Send ``items`` from ``fd``; the list of those the kernel had no room for (see the module doc)."""
    global dropped, unaddressable
    cdef Py_ssize_t n = len(items), i = 0, k, sent
    cdef int r
    cdef bytes data, packed
    cdef sockaddr_in *a4
    cdef sockaddr_in6 *a6
    if family != AF_INET and family != AF_INET6:
        raise ValueError(f"not an IP socket family: {family}")
    while i < n:
        # Fill a batch from items[i:]; message j of it sends items[_index[j]].
        k = 0
        while i < n and k < BATCH:
            data, peer = items[i]
            packed = _pack(family, peer[1])
            if not packed:
                unaddressable += 1
                i += 1
                continue
            _index[k] = i
            memset(&_addrs[k], 0, sizeof(sockaddr_in6))
            if family == AF_INET:
                a4 = <sockaddr_in *>&_addrs[k]
                a4.sin_family = AF_INET
                a4.sin_port = htons(<uint16_t>peer[2])
                memcpy(&a4.sin_addr, PyBytes_AS_STRING(packed), 4)
                _msgs[k].msg_hdr.msg_namelen = sizeof(sockaddr_in)
            else:
                a6 = &_addrs[k]
                a6.sin6_family = AF_INET6
                a6.sin6_port = htons(<uint16_t>peer[2])
                memcpy(&a6.sin6_addr, PyBytes_AS_STRING(packed), 16)
                _msgs[k].msg_hdr.msg_namelen = sizeof(sockaddr_in6)
            # The bytes stay alive in ``items`` until the call below returns.
            _iov[k].iov_base = PyBytes_AS_STRING(data)
            _iov[k].iov_len = PyBytes_GET_SIZE(data)
            _msgs[k].msg_hdr.msg_name = &_addrs[k]
            _msgs[k].msg_hdr.msg_iov = &_iov[k]
            _msgs[k].msg_hdr.msg_iovlen = 1
            _msgs[k].msg_hdr.msg_control = NULL
            _msgs[k].msg_hdr.msg_controllen = 0
            _msgs[k].msg_hdr.msg_flags = 0
            k += 1
            i += 1
        if k == 0:
            break
        sent = 0
        while sent < k:
            r = sendmmsg(fd, &_msgs[sent], <unsigned int>(k - sent), MSG_DONTWAIT)
            if r > 0:
                sent += r
            elif errno == EINTR:
                continue
            elif errno == EAGAIN or errno == ENOBUFS:  # EWOULDBLOCK is EAGAIN on Linux
                return items[_index[sent]:]  # no room: the caller sends the rest when it can
            else:
                dropped += 1  # this one datagram refused: the next ones still go
                sent += 1
    return []
