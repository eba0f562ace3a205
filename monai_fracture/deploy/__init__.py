"""MONAI Deploy App SDK application: DICOM in, fracture classification, TID 1500 SR + KOS out.

Needs the optional extra ``monai-fracture[deploy]`` (monai-deploy-app-sdk with holoscan);
importing this package does not import the SDK, the app and operator modules do.
"""
