import secrets

from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from allthepatents.env import env_str


class Command(BaseCommand):
    help = "Make sure an admin account exists (ADMIN_USERNAME, ADMIN_PASSWORD, ADMIN_EMAIL)."

    def handle(self, *args, **options):
        User = get_user_model()
        username = env_str("ADMIN_USERNAME", "admin")
        password = env_str("ADMIN_PASSWORD")
        email = env_str("ADMIN_EMAIL", "")
        user = User.objects.filter(username=username).first()
        if password:
            # The same validators as every other password on the site (AUTH_PASSWORD_VALIDATORS).
            candidate = user or User(username=username, email=email)
            try:
                validate_password(password, user=candidate)
            except ValidationError as exc:
                raise CommandError(
                    "ADMIN_PASSWORD is not acceptable: " + " ".join(exc.messages)
                ) from None
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
