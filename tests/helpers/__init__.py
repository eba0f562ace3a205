"""Shared test helpers (no tests here): tool/data requirements, generated DICOM, hostile inputs, Orthanc drivers.

Test modules import them as ``from helpers.needs import missing``: pytest puts ``tests/`` on ``sys.path``.
"""
