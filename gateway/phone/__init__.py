"""The telephone leg: SIP dial-in and dial-out as a front-end (docs/phone.md).

Wired only by the composition root (gateway/main.py); the rest of gateway/ never
imports it (tests/test_architecture.py).
"""
