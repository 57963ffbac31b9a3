from __future__ import annotations

from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="django-analyze-sessions",
    version="1.0.0.dev0",
    description=(
        "A Django management command that reports how much space sessions "
        "take, and which keys take it."
    ),
    long_description=Path(__file__).with_name("README.rst").read_text(encoding="utf-8"),
    long_description_content_type="text/x-rst",
    license="BSD-3-Clause",
    packages=find_packages(include=["analyze_sessions", "analyze_sessions.*"]),
    package_data={
        "analyze_sessions": [
            "py.typed",
            "report.schema.json",
            "known_keys.json",
            "letter_pairs.json",
        ]
    },
    python_requires=">=3.10",
    install_requires=["Django>=5.2", "jsonschema>=4.20", "msgspec>=0.18", "tqdm>=4.60"],
    # What the test suite needs, declared once: tox installs these too.
    extras_require={
        "test": [
            "coverage[toml]>=7.6",
            "django-allauth[mfa,socialaccount]>=65.19",
            "django-formtools>=2.7",
            "django-redis>=5.4",
            "django-redis-sessions>=0.6.2",
            "django-tasks-db>=0.13",
            "hypothesis>=6.100",
            "mirakuru>=2.5",
            "prometheus-client>=0.20",
            "pymemcache>=4",
            "pytest>=8.3",
            "pytest-django>=4.9",
            "pytest-randomly>=3.15",
            "redis>=5",
            "social-auth-app-django>=7.2",
        ],
        "postgres": ["psycopg[binary]>=3.1"],
        "mysql": ["mysqlclient>=2.2"],
    },
    classifiers=[
        "Development Status :: 4 - Beta",
        "Environment :: Web Environment",
        "Framework :: Django",
        "Framework :: Django :: 5.2",
        "Framework :: Django :: 6.0",
        "Framework :: Django :: 6.1",
        "Intended Audience :: Developers",
        "Intended Audience :: System Administrators",
        "Operating System :: OS Independent",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3 :: Only",
        "Programming Language :: Python :: 3.10",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Programming Language :: Python :: 3.13",
        "Topic :: System :: Systems Administration",
        "Typing :: Typed",
    ],
    zip_safe=False,
)
