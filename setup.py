from setuptools import find_packages, setup

setup(
    name='cqshift-basicsr',
    version='0.1.0',  # keep equal to cqshift_basicsr.__version__
    description='Unpaired face restoration via a learnable cross-quality shift in StyleGAN2 latent space: '
    'a BasicSR plugin with GFPGAN and PSFRGAN baselines',
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    license='Apache-2.0',
    python_requires='>=3.9',
    packages=find_packages(include=('cqshift_basicsr', 'cqshift_basicsr.*')),
    install_requires=[
        'torch>=2.0', 'torchvision', 'basicsr==1.4.2', 'gfpgan>=1.3.8', 'facexlib>=0.3.0', 'lpips>=0.1.4',
        'mmcv-lite>=2.2.0', 'mmengine>=0.10.7', 'opencv-python', 'numpy', 'Pillow', 'scikit-image', 'pyyaml', 'lmdb', 'tqdm'
    ],
    extras_require={
        'plot': ['matplotlib'],
        'test': ['pytest'],
        # whole photos: dlib's HOG/CNN face detectors (dlib-bin is dlib's prebuilt wheel) and the public-domain
        # 5-point landmark and CNN detector files of face-recognition-models (cqshift_basicsr/face_detection.py)
        'wild': ['dlib-bin>=20.0', 'face-recognition-models==0.3.0'],
        # test-only: tests/test_face_helper.py reads the group photo insightface/data/images/t1.jpg from the installed
        # package; install it with --no-deps (the Makefile does), its runtime (onnxruntime, ...) is not needed
        'test-photos': ['insightface'],
    },
    entry_points={
        'console_scripts': [
            'cqshift-train=cqshift_basicsr.train:main',
            'cqshift-test=cqshift_basicsr.test:main',
            'cqshift-convert-lpips=cqshift_basicsr.metrics.lpips_weights:main',
            'cqshift-export=cqshift_basicsr.export:main',
            'cqshift-restore=cqshift_basicsr.restore:main',
            'cqshift-make-toy-faces=cqshift_basicsr.toy:main',
            'cqshift-convert-stylegan2=cqshift_basicsr.convert_stylegan2:main',
        ]
    },
)
