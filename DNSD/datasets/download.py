"""The official files of a data set in Paddle's dataset cache (~/.cache/paddle/dataset), downloaded and md5-checked
once by Paddle's downloader, which DNSD announces in one line of its own."""
import os


def cache_dir(dataset):
    from paddle.dataset.common import DATA_HOME

    return os.path.join(DATA_HOME, dataset)


def fetch(url, folder, md5):
    """The path of url's file in folder, downloaded first where it is not there yet."""
    from paddle.utils.download import get_path_from_url

    if not os.path.exists(os.path.join(folder, url.rsplit("/", 1)[-1])):
        print(f"DNSD: downloading {url} into {folder} (once; its md5 is checked)", flush=True)
    return get_path_from_url(url, folder, md5, decompress=False)

