"""Real places for synthetic addresses: districts in their own province, wards in their own
district, and communes of the provinces as they are since 1 July 2025.

Two shapes (DOMAIN.md, "Addresses"): records registered before 1 July 2025 carry three levels
(ward, district, province: ``Phuong Ben Nghe, Quan 1, Thanh pho Ho Chi Minh``); records made
since carry two (commune and one of the 34 provinces: ``Phuong Sai Gon, Thanh pho Ho Chi
Minh``). The tables hold a sample of each province's units, not all of them, without
diacritics as SMS replies carry them.
"""

from __future__ import annotations

# -- before 1 July 2025: province code -> (district kind, district name, its wards) ---------------
District = tuple[str, str, tuple[str, ...]]


def _wards(text: str) -> tuple[str, ...]:
    return tuple(text.split(", "))


DISTRICTS: dict[str, tuple[District, ...]] = {
    "001": (  # Ha Noi
        ("Quan", "Ba Dinh", _wards(
            "Phuong Phuc Xa, Phuong Truc Bach, Phuong Quan Thanh, Phuong Ngoc Ha, "
            "Phuong Dien Bien, Phuong Doi Can, Phuong Kim Ma, Phuong Giang Vo, Phuong Thanh Cong")),
        ("Quan", "Hoan Kiem", _wards(
            "Phuong Hang Bac, Phuong Hang Bai, Phuong Hang Trong, Phuong Trang Tien, "
            "Phuong Ly Thai To, Phuong Phan Chu Trinh, Phuong Cua Nam")),
        ("Quan", "Dong Da", _wards(
            "Phuong Van Mieu, Phuong Quoc Tu Giam, Phuong Lang Thuong, Phuong O Cho Dua, "
            "Phuong Kim Lien, Phuong Trung Liet, Phuong Kham Thien")),
        ("Quan", "Cau Giay", _wards(
            "Phuong Dich Vong, Phuong Dich Vong Hau, Phuong Quan Hoa, Phuong Nghia Do, "
            "Phuong Nghia Tan, Phuong Mai Dich, Phuong Yen Hoa, Phuong Trung Hoa")),
        ("Quan", "Long Bien", _wards(
            "Phuong Bo De, Phuong Ngoc Lam, Phuong Gia Thuy, Phuong Duc Giang, "
            "Phuong Viet Hung, Phuong Phuc Dong")),
        ("Quan", "Hai Ba Trung", _wards(
            "Phuong Bach Mai, Phuong Minh Khai, Phuong Vinh Tuy, Phuong Thanh Nhan, "
            "Phuong Le Dai Hanh")),
        ("Quan", "Thanh Xuan", _wards(
            "Phuong Thanh Xuan Trung, Phuong Thanh Xuan Bac, Phuong Nhan Chinh, "
            "Phuong Khuong Trung")),
        ("Huyen", "Dong Anh", _wards(
            "Thi tran Dong Anh, Xa Uy No, Xa Van Noi, Xa Kim Chung, Xa Hai Boi")),
        ("Huyen", "Gia Lam", _wards("Thi tran Trau Quy, Xa Duong Xa, Xa Da Ton, Xa Bat Trang")),
    ),
    "079": (  # Ho Chi Minh
        ("Quan", "1", _wards(
            "Phuong Ben Nghe, Phuong Ben Thanh, Phuong Tan Dinh, Phuong Da Kao, "
            "Phuong Nguyen Thai Binh, Phuong Pham Ngu Lao, Phuong Cau Ong Lanh, "
            "Phuong Co Giang, Phuong Nguyen Cu Trinh")),
        ("Quan", "3", _wards("Phuong Vo Thi Sau, Phuong 9, Phuong 11, Phuong 12, Phuong 14")),
        ("Quan", "Binh Thanh", _wards(
            "Phuong 1, Phuong 2, Phuong 13, Phuong 22, Phuong 25, Phuong 26")),
        ("Quan", "Go Vap", _wards("Phuong 1, Phuong 3, Phuong 5, Phuong 10, Phuong 17")),
        ("Quan", "Tan Binh", _wards("Phuong 2, Phuong 4, Phuong 12, Phuong 15")),
        ("Quan", "Phu Nhuan", _wards("Phuong 2, Phuong 7, Phuong 9")),
        ("Thanh pho", "Thu Duc", _wards(
            "Phuong Linh Trung, Phuong Linh Chieu, Phuong Hiep Binh Chanh, Phuong Thao Dien, "
            "Phuong An Phu, Phuong Binh Tho")),
        ("Huyen", "Cu Chi", _wards(
            "Thi tran Cu Chi, Xa Tan Thanh Dong, Xa Phuoc Vinh An, Xa Trung Lap Ha")),
        ("Huyen", "Binh Chanh", _wards("Thi tran Tan Tuc, Xa Vinh Loc A, Xa Binh Hung")),
    ),
    "048": (  # Da Nang
        ("Quan", "Hai Chau", _wards(
            "Phuong Hai Chau I, Phuong Thach Thang, Phuong Thanh Binh, Phuong Phuoc Ninh, "
            "Phuong Hoa Thuan Tay, Phuong Binh Hien")),
        ("Quan", "Thanh Khe", _wards(
            "Phuong Thac Gian, Phuong Chinh Gian, Phuong Tam Thuan, Phuong Xuan Ha, "
            "Phuong An Khe")),
        ("Quan", "Son Tra", _wards(
            "Phuong An Hai Bac, Phuong An Hai Tay, Phuong Phuoc My, Phuong Man Thai, "
            "Phuong Tho Quang")),
        ("Quan", "Lien Chieu", _wards(
            "Phuong Hoa Khanh Bac, Phuong Hoa Khanh Nam, Phuong Hoa Minh")),
        ("Huyen", "Hoa Vang", _wards("Xa Hoa Tien, Xa Hoa Phong, Xa Hoa Chau")),
    ),
    "031": (  # Hai Phong
        ("Quan", "Hong Bang", _wards(
            "Phuong Hoang Van Thu, Phuong Minh Khai, Phuong Quan Toan, Phuong So Dau")),
        ("Quan", "Le Chan", _wards(
            "Phuong An Bien, Phuong Cat Dai, Phuong Du Hang, Phuong Ho Nam, Phuong Trai Cau")),
        ("Quan", "Ngo Quyen", _wards(
            "Phuong May Chai, Phuong Lach Tray, Phuong Dang Giang, Phuong Cau Dat")),
        ("Huyen", "Tien Lang", _wards("Thi tran Tien Lang")),
    ),
    "092": (  # Can Tho
        ("Quan", "Ninh Kieu", _wards(
            "Phuong Tan An, Phuong An Hoa, Phuong Xuan Khanh, Phuong Hung Loi, "
            "Phuong An Khanh, Phuong Cai Khe, Phuong Thoi Binh")),
        ("Quan", "Binh Thuy", _wards(
            "Phuong Binh Thuy, Phuong An Thoi, Phuong Tra Noc, Phuong Long Hoa")),
        ("Quan", "Cai Rang", _wards("Phuong Le Binh, Phuong Hung Phu, Phuong Ba Lang")),
        ("Huyen", "Phong Dien", _wards("Thi tran Phong Dien, Xa Nhon Ai, Xa My Khanh")),
    ),
    "040": (  # Nghe An
        ("Thanh pho", "Vinh", _wards(
            "Phuong Hung Binh, Phuong Le Loi, Phuong Quang Trung, Phuong Truong Thi, "
            "Phuong Ha Huy Tap, Phuong Ben Thuy, Phuong Hung Dung")),
        ("Huyen", "Nam Dan", _wards("Thi tran Nam Dan, Xa Kim Lien")),
        ("Huyen", "Dien Chau", _wards("Thi tran Dien Chau")),
    ),
    "046": (  # Thua Thien Hue
        ("Thanh pho", "Hue", _wards(
            "Phuong Phu Hoi, Phuong Vinh Ninh, Phuong Thuan Hoa, Phuong Kim Long, "
            "Phuong Tay Loc, Phuong Dong Ba")),
        ("Huyen", "Quang Dien", _wards("Thi tran Sia, Xa Quang Tho")),
        ("Huyen", "Phong Dien", _wards("Thi tran Phong Dien")),
    ),
    "056": (  # Khanh Hoa
        ("Thanh pho", "Nha Trang", _wards(
            "Phuong Loc Tho, Phuong Vinh Hai, Phuong Phuoc Hoa, Phuong Tan Lap, "
            "Phuong Xuong Huan")),
        ("Thanh pho", "Cam Ranh", _wards("Phuong Cam Nghia, Phuong Cam Phuc Bac")),
        ("Huyen", "Dien Khanh", _wards("Thi tran Dien Khanh")),
    ),
    "022": (  # Quang Ninh
        ("Thanh pho", "Ha Long", _wards(
            "Phuong Bach Dang, Phuong Hong Gai, Phuong Bai Chay, Phuong Hong Hai, "
            "Phuong Cao Xanh")),
        ("Thanh pho", "Cam Pha", _wards("Phuong Cam Trung, Phuong Cam Thanh")),
        ("Huyen", "Van Don", _wards("Thi tran Cai Rong")),
    ),
    "038": (  # Thanh Hoa
        ("Thanh pho", "Thanh Hoa", _wards(
            "Phuong Dien Bien, Phuong Lam Son, Phuong Ba Dinh, Phuong Dong Tho, "
            "Phuong Truong Thi")),
        ("Huyen", "Hoang Hoa", _wards("Thi tran But Son")),
        ("Huyen", "Tho Xuan", _wards("Thi tran Tho Xuan")),
    ),
    "066": (  # Dak Lak
        ("Thanh pho", "Buon Ma Thuot", _wards(
            "Phuong Tan Loi, Phuong Tan Lap, Phuong Thang Loi, Phuong Thong Nhat, "
            "Phuong Ea Tam, Phuong Tan An")),
        ("Huyen", "Krong Pac", _wards("Thi tran Phuoc An")),
    ),
    "074": (  # Binh Duong
        ("Thanh pho", "Thu Dau Mot", _wards(
            "Phuong Phu Cuong, Phuong Hiep Thanh, Phuong Chanh Nghia, Phuong Phu Hoa, "
            "Phuong Phu Loi")),
        ("Thanh pho", "Di An", _wards("Phuong Di An, Phuong Dong Hoa")),
        ("Thanh pho", "Thuan An", _wards("Phuong Lai Thieu, Phuong An Phu")),
    ),
    "075": (  # Dong Nai
        ("Thanh pho", "Bien Hoa", _wards(
            "Phuong Tan Phong, Phuong Trung Dung, Phuong Quyet Thang, Phuong Tan Hiep, "
            "Phuong Ho Nai")),
        ("Huyen", "Trang Bom", _wards("Thi tran Trang Bom")),
    ),
    "089": (  # An Giang
        ("Thanh pho", "Long Xuyen", _wards(
            "Phuong My Binh, Phuong My Long, Phuong My Xuyen, Phuong Dong Xuyen")),
        ("Thanh pho", "Chau Doc", _wards("Phuong Chau Phu A, Phuong Nui Sam")),
        ("Huyen", "Tri Ton", _wards("Thi tran Tri Ton")),
    ),
    "027": (  # Bac Ninh
        ("Thanh pho", "Bac Ninh", _wards(
            "Phuong Suoi Hoa, Phuong Vu Ninh, Phuong Tien An, Phuong Ninh Xa, Phuong Dai Phuc")),
        ("Thanh pho", "Tu Son", _wards("Phuong Dong Ngan, Phuong Dinh Bang")),
    ),
    "036": (  # Nam Dinh
        ("Thanh pho", "Nam Dinh", _wards(
            "Phuong Tran Hung Dao, Phuong Vi Hoang, Phuong Nang Tinh, Phuong Cua Bac")),
        ("Huyen", "Nghia Hung", _wards("Thi tran Lieu De")),
    ),
    "026": (  # Vinh Phuc
        ("Thanh pho", "Vinh Yen", _wards(
            "Phuong Lien Bao, Phuong Ngo Quyen, Phuong Dong Da, Phuong Tich Son")),
        ("Huyen", "Yen Lac", _wards("Thi tran Yen Lac")),
        ("Huyen", "Tam Duong", _wards("Thi tran Hop Hoa")),
    ),
    "052": (  # Binh Dinh
        ("Thanh pho", "Quy Nhon", _wards(
            "Phuong Le Loi, Phuong Tran Phu, Phuong Ly Thuong Kiet, Phuong Nguyen Van Cu, "
            "Phuong Ghenh Rang")),
        ("Huyen", "Tuy Phuoc", _wards("Thi tran Tuy Phuoc")),
    ),
    "042": (  # Ha Tinh
        ("Thanh pho", "Ha Tinh", _wards(
            "Phuong Bac Ha, Phuong Nam Ha, Phuong Tran Phu, Phuong Tan Giang")),
        ("Huyen", "Cam Xuyen", _wards("Thi tran Cam Xuyen")),
    ),
    "068": (  # Lam Dong
        ("Thanh pho", "Da Lat", _wards(
            "Phuong 1, Phuong 2, Phuong 3, Phuong 4, Phuong 8, Phuong 9, Phuong 10")),
        ("Thanh pho", "Bao Loc", _wards("Phuong 1, Phuong 2, Phuong Loc Phat")),
    ),
    "082": (  # Tien Giang
        ("Thanh pho", "My Tho", _wards("Phuong 1, Phuong 4, Phuong 5, Phuong 6")),
        ("Huyen", "Cai Be", _wards("Thi tran Cai Be")),
    ),
}  # fmt: skip

# The provinces above as their records name them; the five centrally run cities are "Thanh pho".
PROVINCES: dict[str, str] = {
    "001": "Thanh pho Ha Noi", "079": "Thanh pho Ho Chi Minh", "048": "Thanh pho Da Nang",
    "031": "Thanh pho Hai Phong", "092": "Thanh pho Can Tho", "040": "Tinh Nghe An",
    "046": "Tinh Thua Thien Hue", "056": "Tinh Khanh Hoa", "022": "Tinh Quang Ninh",
    "038": "Tinh Thanh Hoa", "066": "Tinh Dak Lak", "074": "Tinh Binh Duong",
    "075": "Tinh Dong Nai", "089": "Tinh An Giang", "027": "Tinh Bac Ninh",
    "036": "Tinh Nam Dinh", "026": "Tinh Vinh Phuc", "052": "Tinh Binh Dinh",
    "042": "Tinh Ha Tinh", "068": "Tinh Lam Dong", "082": "Tinh Tien Giang",
}  # fmt: skip

# Codes from here on are the south, where a hamlet is an "Ap" (a "Thon" or "Xom" elsewhere).
SOUTHERN_FROM = 70

# -- since 1 July 2025: the province (34 of them) -> a sample of its communes ---------------------
COMMUNES: dict[str, tuple[str, ...]] = {
    "Thanh pho Ha Noi": _wards(
        "Phuong Hoan Kiem, Phuong Cua Nam, Phuong Ba Dinh, Phuong Ngoc Ha, Phuong Giang Vo, "
        "Phuong Dong Da, Phuong Lang, Phuong Kim Lien, Phuong Cau Giay, Phuong Nghia Do, "
        "Phuong Yen Hoa, Phuong Tay Ho, Phuong Long Bien, Phuong Bo De, Phuong Hai Ba Trung, "
        "Phuong Bach Mai, Phuong Vinh Tuy, Phuong Ha Dong, Xa Dong Anh, Xa Gia Lam, "
        "Xa Bat Trang, Xa Soc Son"
    ),
    "Thanh pho Ho Chi Minh": _wards(
        "Phuong Sai Gon, Phuong Ben Thanh, Phuong Tan Dinh, Phuong Cau Ong Lanh, "
        "Phuong Xuan Hoa, Phuong Ban Co, Phuong Gia Dinh, Phuong Binh Thanh, "
        "Phuong Thanh My Tay, Phuong Go Vap, Phuong Hanh Thong, Phuong Tan Son Nhat, "
        "Phuong Thu Duc, Phuong Linh Xuan, Phuong Thu Dau Mot, Phuong Di An, Phuong Vung Tau, "
        "Xa Cu Chi, Xa Binh Chanh, Dac khu Con Dao"
    ),
    "Thanh pho Da Nang": _wards(
        "Phuong Hai Chau, Phuong Hoa Cuong, Phuong Thanh Khe, Phuong Son Tra, Phuong An Hai, "
        "Phuong Ngu Hanh Son, Phuong Lien Chieu, Phuong Hoi An, Phuong Tam Ky, Xa Hoa Vang"
    ),
    "Thanh pho Hai Phong": _wards(
        "Phuong Hong Bang, Phuong Le Chan, Phuong Ngo Quyen, Phuong Hai Duong, Dac khu Cat Hai"
    ),
    "Thanh pho Can Tho": _wards(
        "Phuong Ninh Kieu, Phuong Cai Khe, Phuong Tan An, Phuong Binh Thuy, Phuong Cai Rang, "
        "Phuong Soc Trang, Phuong Vi Thanh, Xa Phong Dien"
    ),
    "Thanh pho Hue": _wards(
        "Phuong Thuan Hoa, Phuong Phu Xuan, Phuong Kim Long, Phuong Vy Da, Phuong An Cuu"
    ),
    "Tinh Nghe An": _wards(
        "Phuong Thanh Vinh, Phuong Truong Vinh, Phuong Vinh Hung, Phuong Vinh Phu, "
        "Phuong Vinh Loc, Phuong Cua Lo"
    ),
    "Tinh Khanh Hoa": _wards(
        "Phuong Nha Trang, Phuong Bac Nha Trang, Phuong Nam Nha Trang, Phuong Tay Nha Trang"
    ),
    "Tinh Quang Ninh": _wards(
        "Phuong Ha Long, Phuong Bai Chay, Phuong Hong Gai, Phuong Cam Pha, Dac khu Van Don, "
        "Dac khu Co To"
    ),
    "Tinh Thanh Hoa": _wards("Phuong Hac Thanh, Phuong Ham Rong, Phuong Sam Son"),
    "Tinh Ninh Binh": _wards("Phuong Hoa Lu, Phuong Nam Dinh, Phuong Phu Ly, Phuong Tam Diep"),
    "Tinh Gia Lai": _wards("Phuong Pleiku, Phuong Quy Nhon, Phuong Quy Nhon Bac"),
    "Tinh An Giang": _wards(
        "Phuong Long Xuyen, Phuong Chau Doc, Phuong Rach Gia, Dac khu Phu Quoc"
    ),
    "Tinh Phu Tho": _wards("Phuong Viet Tri, Phuong Vinh Yen, Phuong Hoa Binh"),
    "Tinh Dak Lak": _wards("Phuong Buon Ma Thuot, Phuong Tuy Hoa"),
    "Tinh Bac Ninh": _wards("Phuong Kinh Bac, Phuong Vu Ninh, Phuong Bac Giang, Phuong Tu Son"),
    "Tinh Dong Nai": _wards("Phuong Tran Bien, Phuong Bien Hoa, Phuong Tam Hiep, Phuong Long Binh"),
    "Tinh Lam Dong": _wards("Phuong Xuan Huong - Da Lat, Phuong Lam Vien - Da Lat"),
}

# Which province of 2025 a pre-2025 province (by its code) became part of, where COMMUNES has it.
MERGED_INTO: dict[str, str] = {
    "001": "Thanh pho Ha Noi",
    "079": "Thanh pho Ho Chi Minh", "074": "Thanh pho Ho Chi Minh",
    "077": "Thanh pho Ho Chi Minh",
    "048": "Thanh pho Da Nang", "049": "Thanh pho Da Nang",
    "031": "Thanh pho Hai Phong", "030": "Thanh pho Hai Phong",
    "092": "Thanh pho Can Tho", "093": "Thanh pho Can Tho", "094": "Thanh pho Can Tho",
    "046": "Thanh pho Hue",
    "040": "Tinh Nghe An",
    "056": "Tinh Khanh Hoa", "058": "Tinh Khanh Hoa",
    "022": "Tinh Quang Ninh",
    "038": "Tinh Thanh Hoa",
    "037": "Tinh Ninh Binh", "035": "Tinh Ninh Binh", "036": "Tinh Ninh Binh",
    "064": "Tinh Gia Lai", "052": "Tinh Gia Lai",
    "089": "Tinh An Giang", "091": "Tinh An Giang",
    "025": "Tinh Phu Tho", "026": "Tinh Phu Tho", "017": "Tinh Phu Tho",
    "066": "Tinh Dak Lak", "054": "Tinh Dak Lak",
    "027": "Tinh Bac Ninh", "024": "Tinh Bac Ninh",
    "075": "Tinh Dong Nai", "070": "Tinh Dong Nai",
    "068": "Tinh Lam Dong", "067": "Tinh Lam Dong", "060": "Tinh Lam Dong",
}  # fmt: skip
