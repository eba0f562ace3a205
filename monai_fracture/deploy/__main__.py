"""``python -m monai_fracture.deploy -i IN -o OUT -m MODEL`` (also how the MAP starts the app).

A MAP runs the app once per study, so the process is as short-lived as ``monai-fracture score``:
MONAI is imported without the training/tracking packages it never uses (``monai_fracture.startup``),
keeping the App SDK.
"""

from monai_fracture import startup

if __name__ == "__main__":
    startup.owns_process = True
    startup.import_monai_for_scoring(keep=startup.KEPT_FOR_DEPLOY)
    from monai_fracture.deploy.app import main

    main()
