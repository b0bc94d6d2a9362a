"""PCP (RFC 6887) and NAT-PMP (RFC 6886) on the wire: the layer a PCP/NAT-PMP backend sits on.

    wire.py    pure codecs: PCP version 2 MAP and ANNOUNCE, NAT-PMP version 0; strict decoding
    epoch.py   pure: did the server lose its mappings, judged from its epoch and the client's clock
    client.py  one request/answer exchange over UDP with the RFCs' retransmission, on an injected
               socket factory and clock
    nonce.py   each mapping's nonce, derived from a local secret; descriptions miniupnpd gives them
    errors.py  what can go wrong, under reconciler.errors.RouterError

Nothing here chooses a protocol or knows about manifests; that is the backend's job.
"""
