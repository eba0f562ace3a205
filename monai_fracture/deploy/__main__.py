"""``python -m monai_fracture.deploy -i IN -o OUT -m MODEL`` (also how the MAP starts the app)."""

from monai_fracture.deploy.app import main

if __name__ == "__main__":
    main()
