"""I/O edge: capture reading (pcap/pcapng), packet decoding, transports and HEP."""
