"""Views of the registry API: thin adapters that parse, call one service and answer.

Plain Django views rather than DRF: DRF's content negotiation would answer 406 to the OCI media
types clients put in ``Accept``, and its parsers buffer bodies; blob bodies must stream.
"""
