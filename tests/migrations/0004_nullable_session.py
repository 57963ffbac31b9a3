from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("tests", "0003_extended_session"),
    ]

    operations = [
        migrations.CreateModel(
            name="NullableSession",
            fields=[
                (
                    "id",
                    models.AutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("session_key", models.CharField(max_length=40, null=True)),
                ("session_data", models.TextField(null=True)),
                ("expire_date", models.DateTimeField(null=True)),
            ],
        ),
    ]
