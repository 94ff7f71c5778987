// SPDX-License-Identifier: MIT
pragma solidity ^0.8.26;

import {Clones} from "@openzeppelin/contracts/proxy/Clones.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {IERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/IERC20Permit.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";

import {IERC3009Receive} from "./interfaces/IERC3009Receive.sol";
import {IMarketplace} from "./interfaces/IMarketplace.sol";
import {IRevenueVault} from "./interfaces/IRevenueVault.sol";

/// @title Marketplace — asset registry and licenses
/// @notice Providers publish datasets and models (content hash, price, license terms, payees,
/// upstream parents). Each asset gets a RevenueVault at a deterministic address; every payment for
/// the asset goes straight into it. Buying pays exactly the price into the vault and records a
/// license; nothing loops over payees.
/// Only a listed asset can be bought. An asset is published listed or unlisted; clients
/// publish unlisted, upload the content, and list once a server has verified the upload, so nobody
/// can buy an asset whose content is not there. A new version is unlisted until its owner lists it
/// again (after uploading that version's content).
/// @dev Parent assets must exist before a child names them, so the royalty graph is a DAG.
contract Marketplace is IMarketplace, ReentrancyGuardTransient {
    using SafeERC20 for IERC20;

    /// @notice The hot part of an asset, packed into two storage slots read by `buy`.
    struct Asset {
        address token;
        uint96 price;
        address owner;
        uint64 licenseDuration;
        uint16 version;
        AssetKind kind;
        bool listed;
    }

    /// @notice An account's license to an asset, in one storage slot.
    struct License {
        uint64 expiresAt;
        uint192 paid;
    }

    // ---------------------------------------------------------------- storage

    /// @notice Shares are in basis points.
    uint256 public constant BPS = 10_000;
    /// @notice Upper bound of the protocol fee.
    uint256 public constant MAX_FEE_BPS = 1_000;
    /// @notice Upper bound of direct parents per asset (bounds royalty fan-out).
    uint256 public constant MAX_PARENTS = 16;
    /// @notice Upper bound of payees per asset (bounds vault set-up gas).
    uint256 public constant MAX_PAYEES = 100;
    /// @notice License expiry meaning "never expires".
    uint64 public constant PERPETUAL = type(uint64).max;

    /// @notice The RevenueVault implementation every asset's vault clones.
    address public immutable vaultImplementation;
    /// @notice Receives the protocol fee as a payee of every vault.
    address public immutable treasury;
    /// @notice Protocol fee in basis points of every payment.
    uint256 public immutable feeBps;

    /// @notice Number of assets published; asset ids run from 1 to assetCount.
    uint256 public assetCount;
    /// @dev Hot asset fields by id.
    mapping(uint256 assetId => Asset) private _assets;
    /// @notice sha256 of the current version's content.
    mapping(uint256 assetId => bytes32 contentHash) public contentHashOf;
    /// @notice Where the current version's metadata lives.
    mapping(uint256 assetId => string uri) public uriOf;
    /// @dev Upstream assets whose vaults receive royalties.
    mapping(uint256 assetId => uint256[] parentIds) private _parents;
    /// @dev `account`'s license to `assetId`: when it ends (0 = never bought, PERPETUAL = never
    /// ends) and the total it paid for it over every purchase (token base units).
    mapping(uint256 assetId => mapping(address account => License)) private _licenses;

    // ---------------------------------------------------------------- constructor

    /// @param vaultImplementation_ A deployed RevenueVault to clone.
    /// @param treasury_ Fee recipient (fixed for the life of the marketplace).
    /// @param feeBps_ Protocol fee, at most MAX_FEE_BPS.
    constructor(address vaultImplementation_, address treasury_, uint256 feeBps_) {
        if (feeBps_ > MAX_FEE_BPS) revert FeeTooHigh(feeBps_, MAX_FEE_BPS);
        vaultImplementation = vaultImplementation_;
        treasury = treasury_;
        feeBps = feeBps_;
    }

    // ---------------------------------------------------------------- external: publishing

    /// @inheritdoc IMarketplace
    function publish(
        AssetKind kind,
        bytes32 contentHash,
        string calldata uri,
        uint256 price,
        address token,
        uint64 licenseDuration,
        address[] calldata payees,
        uint256[] calldata shares,
        uint256[] calldata parents,
        uint256[] calldata parentShares,
        bool listed
    ) external returns (uint256 assetId) {
        if (token.code.length == 0) revert InvalidToken(token);
        if (price > type(uint96).max) revert PriceTooLarge(price);
        (address[] memory vaultPayees, uint256[] memory vaultShares) =
            _vaultSplit(payees, shares, parents, parentShares);

        assetId = ++assetCount;
        _assets[assetId] = Asset({
            token: token,
            price: uint96(price),
            owner: msg.sender,
            licenseDuration: licenseDuration,
            version: 1,
            kind: kind,
            listed: listed
        });
        contentHashOf[assetId] = contentHash;
        uriOf[assetId] = uri;
        _parents[assetId] = parents;

        address vault = Clones.cloneDeterministic(vaultImplementation, bytes32(assetId));
        IRevenueVault(vault).initialize(assetId, vaultPayees, vaultShares);
        emit AssetPublished(
            assetId, msg.sender, kind, contentHash, uri, token, price, licenseDuration, vault, parents, listed
        );
    }

    /// @inheritdoc IMarketplace
    function publishVersion(uint256 assetId, bytes32 contentHash, string calldata uri) external {
        Asset storage asset = _ownedAsset(assetId);
        uint16 version = asset.version + 1;
        bool wasListed = asset.listed;
        asset.version = version;
        asset.listed = false;
        contentHashOf[assetId] = contentHash;
        uriOf[assetId] = uri;
        emit AssetVersionPublished(assetId, version, contentHash, uri);
        if (wasListed) emit ListingChanged(assetId, false);
    }

    /// @inheritdoc IMarketplace
    function setPrice(uint256 assetId, uint256 price) external {
        if (price > type(uint96).max) revert PriceTooLarge(price);
        _ownedAsset(assetId).price = uint96(price);
        emit PriceUpdated(assetId, price);
    }

    /// @inheritdoc IMarketplace
    function setListed(uint256 assetId, bool listed) external {
        _ownedAsset(assetId).listed = listed;
        emit ListingChanged(assetId, listed);
    }

    // ---------------------------------------------------------------- external: buying

    /// @inheritdoc IMarketplace
    function buy(uint256 assetId, uint256 maxPrice) external nonReentrant {
        Asset memory asset = _purchasable(assetId, maxPrice);
        _recordLicense(assetId, asset, msg.sender);
        IERC20(asset.token).safeTransferFrom(msg.sender, vaultOf(assetId), asset.price);
    }

    /// @inheritdoc IMarketplace
    /// @dev A permit that fails (e.g. front-run and already used) is ignored; the transfer decides.
    function buyWithPermit(uint256 assetId, uint256 maxPrice, uint256 deadline, uint8 v, bytes32 r, bytes32 s)
        external
        nonReentrant
    {
        Asset memory asset = _purchasable(assetId, maxPrice);
        try IERC20Permit(asset.token).permit(msg.sender, address(this), asset.price, deadline, v, r, s) {} catch {}
        _recordLicense(assetId, asset, msg.sender);
        IERC20(asset.token).safeTransferFrom(msg.sender, vaultOf(assetId), asset.price);
    }

    /// @inheritdoc IMarketplace
    /// @dev The authorization must name this contract as `to`, the asset's price as `value`, and
    /// nonce = authorizationNonce(assetId, salt), which binds it to this asset.
    function buyWithAuthorization(
        uint256 assetId,
        address buyer,
        uint256 value,
        uint256 validAfter,
        uint256 validBefore,
        bytes32 salt,
        bytes calldata signature
    ) external nonReentrant {
        address token = _licenseForAuthorization(assetId, buyer, value);
        salt = authorizationNonce(assetId, salt); // reuse the slot: the nonce the buyer signed
        IERC3009Receive(token).receiveWithAuthorization(
            buyer, address(this), value, validAfter, validBefore, salt, signature
        );
        IERC20(token).safeTransfer(vaultOf(assetId), value);
    }

    // ---------------------------------------------------------------- views

    /// @inheritdoc IMarketplace
    function authorizationNonce(uint256 assetId, bytes32 salt) public view returns (bytes32) {
        return keccak256(abi.encode(address(this), assetId, salt));
    }

    /// @inheritdoc IMarketplace
    function vaultOf(uint256 assetId) public view returns (address) {
        if (assetId == 0 || assetId > assetCount) revert UnknownAsset(assetId);
        return Clones.predictDeterministicAddress(vaultImplementation, bytes32(assetId));
    }

    /// @inheritdoc IMarketplace
    function hasAccess(uint256 assetId, address account) external view returns (bool) {
        return _licenses[assetId][account].expiresAt > block.timestamp;
    }

    /// @inheritdoc IMarketplace
    function licenseExpiry(uint256 assetId, address account) external view returns (uint64) {
        return _licenses[assetId][account].expiresAt;
    }

    /// @inheritdoc IMarketplace
    function licensePaid(uint256 assetId, address account) external view returns (uint256) {
        return _licenses[assetId][account].paid;
    }

    /// @inheritdoc IMarketplace
    function ownerOf(uint256 assetId) external view returns (address) {
        return _existing(assetId).owner;
    }

    /// @inheritdoc IMarketplace
    function priceOf(uint256 assetId) external view returns (uint256) {
        return _existing(assetId).price;
    }

    /// @inheritdoc IMarketplace
    function paymentTerms(uint256 assetId) external view returns (address token, address vault) {
        return (_existing(assetId).token, vaultOf(assetId));
    }

    /// @inheritdoc IMarketplace
    function parentsOf(uint256 assetId) external view returns (uint256[] memory) {
        _existing(assetId);
        return _parents[assetId];
    }

    /// @inheritdoc IMarketplace
    function getAsset(uint256 assetId) external view returns (AssetView memory view_) {
        Asset memory asset = _existing(assetId);
        view_ = AssetView({
            assetId: assetId,
            kind: asset.kind,
            owner: asset.owner,
            token: asset.token,
            price: asset.price,
            licenseDuration: asset.licenseDuration,
            version: asset.version,
            listed: asset.listed,
            contentHash: contentHashOf[assetId],
            uri: uriOf[assetId],
            vault: vaultOf(assetId),
            parents: _parents[assetId]
        });
    }

    // ---------------------------------------------------------------- internal

    function _existing(uint256 assetId) internal view returns (Asset memory asset) {
        asset = _assets[assetId];
        if (asset.owner == address(0)) revert UnknownAsset(assetId);
    }

    function _ownedAsset(uint256 assetId) internal view returns (Asset storage asset) {
        asset = _assets[assetId];
        if (asset.owner == address(0)) revert UnknownAsset(assetId);
        if (asset.owner != msg.sender) revert NotAssetOwner(assetId, msg.sender, asset.owner);
    }

    function _purchasable(uint256 assetId, uint256 maxPrice) internal view returns (Asset memory asset) {
        asset = _existing(assetId);
        if (!asset.listed) revert AssetDelisted(assetId);
        if (asset.price > maxPrice) revert PriceAboveMax(assetId, asset.price, maxPrice);
    }

    function _licenseForAuthorization(uint256 assetId, address buyer, uint256 value) internal returns (address) {
        Asset memory asset = _purchasable(assetId, value);
        if (asset.price != value) revert PriceMismatch(assetId, asset.price, value);
        _recordLicense(assetId, asset, buyer);
        return asset.token;
    }

    function _recordLicense(uint256 assetId, Asset memory asset, address buyer) internal {
        License storage license = _licenses[assetId][buyer];
        uint64 current = license.expiresAt;
        if (current == PERPETUAL) revert AlreadyLicensed(assetId, buyer);
        uint64 expiresAt;
        if (asset.licenseDuration == 0) {
            expiresAt = PERPETUAL;
        } else {
            uint64 start = current > block.timestamp ? current : uint64(block.timestamp);
            expiresAt = start + asset.licenseDuration;
        }
        // One slot: the expiry and the running total paid (a uint96 price cannot overflow uint192).
        license.expiresAt = expiresAt;
        license.paid += asset.price;
        emit LicensePurchased(assetId, buyer, asset.price, expiresAt);
    }

    /// @dev Turns provider payees (bps) and parent royalties (bps) into vault payees, with the
    /// protocol fee taken off the top: payee share = bps × (BPS − fee), treasury = fee × BPS.
    function _vaultSplit(
        address[] calldata payees,
        uint256[] calldata shares,
        uint256[] calldata parents,
        uint256[] calldata parentShares
    ) internal view returns (address[] memory vaultPayees, uint256[] memory vaultShares) {
        if (payees.length == 0) revert NoPayees();
        if (payees.length > MAX_PAYEES) revert TooManyPayees(payees.length, MAX_PAYEES);
        if (parents.length > MAX_PARENTS) revert TooManyParents(parents.length, MAX_PARENTS);
        if (payees.length != shares.length) revert LengthMismatch(payees.length, shares.length);
        if (parents.length != parentShares.length) revert LengthMismatch(parents.length, parentShares.length);

        uint256 fee = feeBps;
        uint256 count = payees.length + parents.length + (fee > 0 ? 1 : 0);
        vaultPayees = new address[](count);
        vaultShares = new uint256[](count);
        uint256 totalBps;
        for (uint256 i; i < payees.length; ++i) {
            if (shares[i] == 0) revert ZeroShare(i);
            totalBps += shares[i];
            vaultPayees[i] = payees[i];
            vaultShares[i] = shares[i] * (BPS - fee);
        }
        uint256 known = assetCount;
        for (uint256 j; j < parents.length; ++j) {
            uint256 parent = parents[j];
            if (parent == 0 || parent > known) revert UnknownParent(parent);
            if (parentShares[j] == 0) revert ZeroShare(payees.length + j);
            totalBps += parentShares[j];
            vaultPayees[payees.length + j] = Clones.predictDeterministicAddress(vaultImplementation, bytes32(parent));
            vaultShares[payees.length + j] = parentShares[j] * (BPS - fee);
        }
        if (totalBps != BPS) revert SharesDoNotSum(totalBps, BPS);
        if (fee > 0) {
            vaultPayees[count - 1] = treasury;
            vaultShares[count - 1] = fee * BPS;
        }
    }
}
