import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from allthepatents.env import env_str


class Command(BaseCommand):
    help = "Make sure an admin account exists (ADMIN_USERNAME, ADMIN_PASSWORD, ADMIN_EMAIL)."

    def handle(self, *args, **options):
        User = get_user_model()
        username = env_str("ADMIN_USERNAME", "admin")
        password = env_str("ADMIN_PASSWORD")
        email = env_str("ADMIN_EMAIL", "")
        user = User.objects.filter(username=username).first()
        if user is not None:
            if password:
                user.set_password(password)
                user.save(update_fields=["password"])
            self.stdout.write(f"admin account {username!r} exists")
            return
        generated = not password
        password = password or secrets.token_urlsafe(12)
        User.objects.create_superuser(username=username, email=email, password=password)
        if generated:
            self.stdout.write(
                self.style.WARNING(
                    f"created admin account {username!r} with password: {password}\n"
                    "(shown once; set ADMIN_PASSWORD to choose it)"
                )
            )
        else:
            self.stdout.write(f"created admin account {username!r}")
