# What C sees of the media engine (core/_rtp.pyx): the system calls it makes without the GIL, the
# per-packet state of a leg (RFC 3550 A.1/A.8 statistics, RFC 4733 event state, the outgoing
# SSRC/seq/ts rewrite, the prompt it plays, the recording ring it feeds), the event queue, and the
# Engine's fields.

from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from posix.time cimport itimerspec, timespec
from posix.uio cimport iovec


cdef extern from "<netinet/in.h>" nogil:
    ctypedef uint32_t in_addr_t
    ctypedef uint16_t in_port_t
    cdef struct in_addr:
        in_addr_t s_addr
    cdef struct sockaddr_in:
        unsigned short sin_family
        in_port_t sin_port
        in_addr sin_addr
    enum: IPPROTO_UDP


cdef extern from "<arpa/inet.h>" nogil:
    uint16_t htons(uint16_t)
    uint16_t ntohs(uint16_t)
    int inet_pton(int, const char *, void *)
    const char *inet_ntop(int, const void *, char *, unsigned int)


cdef extern from "<sys/socket.h>" nogil:
    ctypedef unsigned int socklen_t
    cdef struct sockaddr:
        pass
    cdef struct msghdr:
        void *msg_name
        socklen_t msg_namelen
        iovec *msg_iov
        size_t msg_iovlen
        void *msg_control
        size_t msg_controllen
        int msg_flags
    cdef struct mmsghdr:
        msghdr msg_hdr
        unsigned int msg_len
    int socket(int, int, int)
    int bind(int, const sockaddr *, socklen_t)
    int setsockopt(int, int, int, const void *, socklen_t)
    int recvmmsg(int, mmsghdr *, unsigned int, int, timespec *)
    int sendmmsg(int, mmsghdr *, unsigned int, int)
    ssize_t sendto(int, const void *, size_t, int, const sockaddr *, socklen_t)
    enum: AF_INET
    enum: SOCK_DGRAM
    enum: SOCK_NONBLOCK
    enum: SOCK_CLOEXEC
    enum: SOL_SOCKET
    enum: SO_RCVBUF
    enum: SO_SNDBUF
    enum: MSG_DONTWAIT
    enum: MSG_TRUNC


cdef extern from "<sys/epoll.h>" nogil:
    ctypedef union epoll_data_t:
        void *ptr
        int fd
        uint32_t u32
        uint64_t u64
    cdef struct epoll_event:
        uint32_t events
        epoll_data_t data
    int epoll_create1(int)
    int epoll_ctl(int, int, int, epoll_event *)
    int epoll_wait(int, epoll_event *, int, int)
    enum: EPOLLIN
    enum: EPOLLONESHOT
    enum: EPOLL_CTL_ADD
    enum: EPOLL_CTL_DEL
    enum: EPOLL_CTL_MOD
    enum: EPOLL_CLOEXEC


cdef extern from "<poll.h>" nogil:
    ctypedef unsigned long nfds_t
    cdef struct pollfd:
        int fd
        short events
        short revents
    int poll(pollfd *, nfds_t, int)
    enum: POLLIN
    enum: POLLERR


cdef extern from "<sys/eventfd.h>" nogil:
    int eventfd(unsigned int, int)
    enum: EFD_NONBLOCK
    enum: EFD_CLOEXEC


cdef extern from "<sys/timerfd.h>" nogil:
    int timerfd_create(int, int)
    int timerfd_settime(int, int, const itimerspec *, itimerspec *)
    enum: TFD_NONBLOCK
    enum: TFD_CLOEXEC


cdef extern from "<pthread.h>" nogil:
    ctypedef struct pthread_mutex_t:
        pass
    int pthread_mutex_init(pthread_mutex_t *, void *)
    int pthread_mutex_destroy(pthread_mutex_t *)
    int pthread_mutex_lock(pthread_mutex_t *)
    int pthread_mutex_trylock(pthread_mutex_t *)
    int pthread_mutex_unlock(pthread_mutex_t *)


cdef enum:
    KIND_INVALID = 0
    KIND_RTP = 1
    KIND_RTCP = 2

    EV_LATCHED = 1   # a: IPv4 address (network order), b: port, c: rtcp, d: relatched
    EV_SSRC = 2      # a: old SSRC, b: new SSRC
    EV_DTMF = 3      # a: event code, b: duration (timestamp units), c: volume
    EV_TIMEOUT = 4   # a: idle milliseconds
    EV_PLAYBACK = 5  # a: playback id, b: frames sent, c: reason (PLAY_DONE...)

    PLAY_DONE = 0
    PLAY_STOPPED = 1
    PLAY_REPLACED = 2
    PLAY_REMOVED = 3

    BATCH = 64       # datagrams per recvmmsg/sendmmsg
    SLOT = 2048      # bytes per receive buffer (larger datagrams are truncated and dropped)
    MAX_EVENTS = 256 # epoll events per wait
    MAX_FRAME = 1024 # bytes of payload per prompt frame (60 ms of 16 kHz G.711 fits)
    MAX_BURST = 5    # frames a late playback may send at once to catch up; beyond, frames are skipped
    CAPTURE_BYTES = 488  # payload bytes kept per recorded packet (60 ms of G.711, and then some)


cdef struct RtpHdr:
    int version
    int padding
    int extension
    int csrc_count
    int marker
    int payload_type
    uint32_t seq
    uint32_t timestamp
    uint32_t ssrc
    int header_length
    int payload_length


cdef struct RecvStats:
    # RFC 3550 A.1 source state and A.8 jitter; the twin is core.media.quality.ReceptionStats.
    uint64_t sources
    uint32_t base_seq
    uint32_t max_seq
    uint32_t bad_seq
    uint64_t cycles
    uint64_t received
    uint64_t expected_prior
    uint64_t received_prior
    int32_t transit
    int have_transit
    int64_t jitter_q4


cdef struct Receiver:
    RecvStats stats
    uint32_t clock_rate
    int dtmf_pt
    uint32_t ssrc
    uint64_t packets
    uint64_t bytes
    uint64_t invalid
    uint64_t rtcp
    uint64_t ssrc_changes
    uint64_t digits
    int event_on
    int event_reported
    uint32_t event_ts
    int event_code
    int event_duration
    int event_volume


cdef struct Rewriter:
    uint32_t ssrc
    uint32_t clock_rate
    uint32_t ts_step
    uint64_t source_changes
    int has_source
    int mark
    uint32_t src
    uint32_t high_seq
    uint32_t high_ts
    uint32_t seq_off
    uint32_t ts_off
    uint32_t last_arrival


cdef struct Playback:
    # a prompt being sent to a leg's peer, one frame every ptime, as a source of its own (src/seq/ts)
    # that the leg's rewrite joins to the bridged audio like any other source
    const uint8_t *data  # frames back to back (a bytes object the Engine keeps alive)
    Py_ssize_t frames
    int frame_bytes
    int payload_type
    int loop
    uint32_t id
    int64_t start_ns     # when frame `base` was due
    int64_t frame_ns
    uint64_t base        # frames skipped or sent before start_ns
    uint64_t index       # frames handled (sent or skipped) since the playback began
    uint64_t sent
    uint32_t src
    uint32_t seq
    uint32_t ts
    int64_t last_ns      # when the previous frame of this source left (0: never)


cdef struct CaptureRec:
    # one packet of a recorded relay, as core/media/recording.py's CAPTURE_DTYPE reads it (512 bytes)
    int64_t arrival_ns
    uint32_t timestamp
    uint32_t ssrc
    uint16_t seq
    uint16_t length
    uint8_t payload_type
    uint8_t marker
    uint8_t leg
    uint8_t pad
    uint8_t payload[CAPTURE_BYTES]


cdef struct Capture:
    CaptureRec *items
    uint32_t cap
    uint32_t head
    uint32_t count
    uint64_t dropped


cdef struct MediaEventC:
    int kind
    int leg          # 0: a, 1: b
    uint64_t serial  # the relay's serial number
    uint32_t a
    uint32_t b
    uint32_t c
    uint32_t d


cdef struct EventQueue:
    MediaEventC *items
    uint32_t cap
    uint32_t head
    uint32_t count
    uint64_t dropped


cdef struct Leg:
    int active
    uint32_t gen
    uint64_t serial
    int which
    int fd[2]            # RTP, RTCP
    int port
    int partner          # index of the leg this one is bridged to, -1: none
    sockaddr_in peer[2]  # where this leg sends (RTP, RTCP)
    int has_peer[2]
    int confirmed[2]     # packets have come from the peer (not only the SDP's word)
    sockaddr_in cand[2]  # a new source address, and how many packets in a row came from it
    int cand_count[2]
    int relatch_after
    int rewrite
    Receiver rx
    Rewriter tx
    uint64_t sent
    uint64_t bytes_sent
    uint64_t dropped
    uint64_t rtcp_sent
    int64_t last_rx_ns
    int64_t timeout_ns
    int timed_out
    int playing
    Playback play
    uint64_t held        # bridged packets held back while a prompt played to this leg
    Capture *rec         # the ring of the relay's recording, NULL: not recorded


cdef int rtp_parse(const uint8_t *p, Py_ssize_t n, RtpHdr *h) noexcept nogil
cdef void stats_init(RecvStats *s, uint32_t seq) noexcept nogil
cdef int stats_update_seq(RecvStats *s, uint32_t seq) noexcept nogil
cdef void stats_jitter(RecvStats *s, uint32_t timestamp, uint32_t arrival) noexcept nogil
cdef int rx_receive(Receiver *r, const uint8_t *p, Py_ssize_t n, uint32_t arrival, RtpHdr *h,
                    EventQueue *q, uint64_t serial, int leg) noexcept nogil
cdef void tx_rewrite(Rewriter *w, uint8_t *p, const RtpHdr *h, uint32_t arrival) noexcept nogil
cdef void queue_push(EventQueue *q, int kind, uint64_t serial, int leg, uint32_t a, uint32_t b,
                     uint32_t c, uint32_t d) noexcept nogil


cdef class RtpReceiver:
    cdef Receiver r
    cdef EventQueue q
    cdef MediaEventC items[16]
    cdef list _pending


cdef class RtpRewriter:
    cdef Rewriter w


cdef class Engine:
    cdef Leg *legs
    cdef int nlegs
    cdef int port_min
    cdef int port_max
    cdef in_addr bind_addr
    cdef int socket_buffer
    cdef int epfd
    cdef int wakefd
    cdef int evfd
    cdef int ev_signalled
    cdef int timerfd
    cdef int timer_armed
    cdef int playing_count
    cdef int recording_count
    cdef int rec_due
    cdef int64_t last_drain_ns
    cdef uint32_t next_playback_id
    cdef pthread_mutex_t mutex
    cdef pthread_mutex_t rec_mutex  # the recordings' Python side (taken before mutex, never after)
    cdef EventQueue queue
    cdef int stopping
    cdef int closed
    cdef uint64_t next_serial
    cdef uint64_t forwarded
    cdef int64_t last_scan_ns
    cdef int alloc_cursor
    cdef int spare_pairs    # the most port pairs kept open for reuse (0: none)
    # SSRCs and a prompt's first seq/ts: SipHash-2-4 of a counter under a key from os.urandom
    cdef uint64_t rng_key[2]
    cdef uint64_t rng_count
    # receive and send vectors, reused by every batch
    cdef mmsghdr rmsgs[BATCH]
    cdef iovec riov[BATCH]
    cdef sockaddr_in rnames[BATCH]
    cdef mmsghdr smsgs[BATCH]
    cdef iovec siov[BATCH]
    cdef uint8_t *rbuf
    cdef epoll_event evs[MAX_EVENTS]
    # the Python side of the commands
    cdef str host
    cdef dict relays        # relay_id -> slot
    cdef dict by_serial     # serial -> relay_id
    cdef dict retired       # serial -> relay_id of removed relays, until their events are drained
    cdef list meta          # slot -> ({...}, {...}) per leg (codec, ptime_ms, delay for the figures)
    cdef list free_slots    # relay slots not in use, the next one last
    cdef set ports          # RTP ports in use
    cdef dict spares        # RTP port -> (RTP fd, RTCP fd) of released pairs kept open, oldest first
    cdef dict prompts       # prompt_id -> Prompt
    cdef dict play_refs     # leg index -> the bytes a playback reads
    cdef dict recordings    # slot -> (CaptureRing, CallRecording)

    cdef long _run(self, int timeout_ms, long max_batches, bint serving=*) noexcept nogil
    cdef uint64_t _random64(self) noexcept nogil
    cdef long _process(self, uint64_t token, int64_t now_ns) noexcept nogil
    cdef int _accept_source(self, Leg *leg, int r, sockaddr_in *src) noexcept nogil
    cdef void _scan_timeouts(self, int64_t now_ns) noexcept nogil
    cdef void _tick(self, int64_t now_ns) noexcept nogil
    cdef void _play_leg(self, Leg *leg, int64_t now_ns) noexcept nogil
    cdef void _end_playback(self, Leg *leg, int reason) noexcept nogil
    cdef void _arm_timer(self, int on) noexcept nogil
    cdef void _signal(self) noexcept nogil
    cdef int _address(self, object value, sockaddr_in *out) except -1
    cdef int _check_new(self, object relay_id) except -1
    cdef int _open_pair(self, object port, int *fds, bint *reused) except -1
    cdef bint _bind_pair(self, int port, int *fds, bint must) except -1
    cdef int _new_socket(self) noexcept
    cdef bint _take_spare(self, int port, int *fds) except -1
    cdef void _release_pair(self, int port, const int *fds, int how)
    cdef void _empty_spares(self, const int *fds, const bint *reused) noexcept
    cdef void _close_spares(self) noexcept
    cdef int _init_leg(self, int i, uint64_t serial, int which, int port, const int *fds, uint32_t ssrc,
                       bint reused) except -1
    cdef object _leg_figures(self, const Leg *leg, dict meta)
    cdef void _push(self, int kind, Leg *leg, uint32_t a, uint32_t b, uint32_t c, uint32_t d) noexcept nogil
    cdef void _close_all(self) noexcept
    cdef void _lock(self) noexcept
    cdef void _unlock(self) noexcept


cdef class CaptureRing:
    cdef Capture c
    cdef bytes take(self)
